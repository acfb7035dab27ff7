// Package throttle limits the bandwidth of all the transfers to one target
// together, by rules that may depend on the time of day ("50 MiB/s on
// weekdays from 08:00 to 18:00, unlimited otherwise"). One Throttle per
// target is shared by every transfer the proxy runs to it; the rule in force
// is looked up as bytes go, so a boundary takes effect during a transfer.
// The token bucket is golang.org/x/time/rate's.
package throttle

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/replicator/replicator/internal/hours"
)

// Rule limits to BytesPerSecond (0: unlimited) while Hours holds the moment.
type Rule struct {
	BytesPerSecond int64
	Hours          hours.Schedule // the zero Schedule always holds
}

// Throttle is the shared limit of one target.
type Throttle struct {
	mu      sync.Mutex
	rules   []Rule
	limiter *rate.Limiter
	current int64 // the limit in force; 0 unlimited
	// Now is the clock rules are evaluated against (tests move it).
	Now func() time.Time
}

// New returns a throttle with the rules, first match wins; no match is unlimited.
func New(rules []Rule) *Throttle {
	t := &Throttle{limiter: rate.NewLimiter(rate.Inf, 0)}
	t.SetRules(rules)
	return t
}

// SetRules replaces the rules (an edited configuration) from the next bytes on.
func (t *Throttle) SetRules(rules []Rule) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rules = append([]Rule(nil), rules...)
}

// Limit is the limit in force at now (0: unlimited).
func (t *Throttle) Limit(now time.Time) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.limitLocked(now)
}

func (t *Throttle) limitLocked(now time.Time) int64 {
	for _, r := range t.rules {
		if r.Hours.Contains(now) {
			return r.BytesPerSecond
		}
	}
	return 0
}

// chunk is the most a single wait takes from the bucket: a tenth of a
// second of the limit, so that a boundary or a change of rules is seen
// within about that long, and the burst stays small.
func chunk(limit int64) int64 { return max(limit/10, 4096) }

// Wait blocks until n bytes may go, or ctx ends.
func (t *Throttle) Wait(ctx context.Context, n int64) error {
	for n > 0 {
		t.mu.Lock()
		now := time.Now()
		if t.Now != nil {
			now = t.Now()
		}
		limit := t.limitLocked(now)
		if limit != t.current {
			t.current = limit
			if limit <= 0 {
				t.limiter.SetLimit(rate.Inf)
			} else {
				t.limiter.SetBurst(int(chunk(limit)))
				t.limiter.SetLimit(rate.Limit(limit))
			}
		}
		t.mu.Unlock()
		if limit <= 0 {
			return ctx.Err()
		}
		take := min(n, chunk(limit))
		if err := t.limiter.WaitN(ctx, int(take)); err != nil {
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case int(take) > t.limiter.Burst():
				continue // the rules changed under this wait: take again by the new ones
			}
			// The wait would outlast ctx's deadline: nothing more goes before it.
			<-ctx.Done()
			return ctx.Err()
		}
		n -= take
	}
	return nil
}
