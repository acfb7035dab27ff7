package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/metrics"
)

// rpoNotifiedFile, in the target agent's datastore, lists the VMs whose
// breach of their rpo has been notified: a restarted agent neither tells a
// breach again nor forgets to tell its end.
const rpoNotifiedFile = "rpo-notified.json"

// rpoNotifier tells notify.webhook and notify.smtp when VMs pass their
// job's rpo, once per breach however many runs and checks it lasts, and
// when they are back within it. A notification that cannot be delivered is
// tried again at the next check; only a delivered one changes what is
// recorded as told.
type rpoNotifier struct {
	agent  string
	path   string
	notify func() (config.Notify, error)
	send   func(context.Context, config.Notify, contract.RPONotification) error
	log    *slog.Logger

	// told: job/VM pairs whose breach was notified and whose end was not.
	told map[string]bool
}

type rpoToldFile struct {
	// Breached lists "job/vm" of the VMs told past their rpo.
	Breached []string `json:"breached"`
}

func newRPONotifier(agent, path string, notify func() (config.Notify, error),
	send func(context.Context, config.Notify, contract.RPONotification) error, logger *slog.Logger) (*rpoNotifier, error) {
	n := &rpoNotifier{agent: agent, path: path, notify: notify, send: send, log: logger, told: map[string]bool{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return n, nil
	case err != nil:
		return nil, fmt.Errorf("rpo notifications: %w", err)
	}
	var f rpoToldFile
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("rpo notifications: %s is %d bytes, more than 1 MiB: not a file this agent wrote", path, len(b))
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("rpo notifications: %s is damaged: %w", path, err)
	}
	for _, k := range f.Breached {
		n.told[k] = true
	}
	return n, nil
}

// check compares the replicas at now with what was told and sends what
// changed: one notification for the VMs that passed their rpo, one for
// those back within it.
func (n *rpoNotifier) check(ctx context.Context, reps []metrics.Replica, now time.Time) {
	cfg, err := n.notify()
	if err != nil || (cfg.Webhook == "" && cfg.SMTP.Address == "") {
		return // nothing to tell to; a breach still open when one is set is told then
	}
	exceeded, recovered := contract.RPONotification{Event: contract.RPOExceeded, Agent: n.agent, Time: now.UTC()},
		contract.RPONotification{Event: contract.RPORecovered, Agent: n.agent, Time: now.UTC()}
	seen := map[string]bool{}
	var exceededKeys, recoveredKeys []string
	for _, rep := range reps {
		k := rep.Job + "/" + rep.VM
		if rep.RPO <= 0 {
			continue // no rpo (any more): nothing to tell, and the breach, if any, is forgotten below
		}
		seen[k] = true
		past := rep.Exceeded(now)
		if past == n.told[k] {
			continue
		}
		st := contract.RPOState{Job: rep.Job, VM: rep.VM, RPO: rep.RPO.String()}
		if !rep.Newest.IsZero() {
			t := rep.Newest.UTC()
			st.PointTime = &t
			st.LagSeconds = now.Sub(rep.Newest).Seconds()
		}
		if past {
			exceeded.VMs = append(exceeded.VMs, st)
			exceededKeys = append(exceededKeys, k)
		} else {
			recovered.VMs = append(recovered.VMs, st)
			recoveredKeys = append(recoveredKeys, k)
		}
	}
	changed := false
	for k := range n.told {
		if !seen[k] { // replica removed or its job's rpo removed
			delete(n.told, k)
			changed = true
		}
	}
	for _, m := range []struct {
		n    contract.RPONotification
		keys []string
		told bool
	}{{exceeded, exceededKeys, true}, {recovered, recoveredKeys, false}} {
		if len(m.keys) == 0 {
			continue
		}
		if err := n.send(ctx, cfg, m.n); err != nil {
			n.log.Warn("could not send the rpo notification; trying again at the next check", "event", m.n.Event, "vms", len(m.keys), "error", err)
			continue
		}
		n.log.Info("sent the rpo notification", "event", m.n.Event, "vms", len(m.keys))
		for _, k := range m.keys {
			if m.told {
				n.told[k] = true
			} else {
				delete(n.told, k)
			}
		}
		changed = true
	}
	if changed {
		if err := n.save(); err != nil {
			n.log.Error("recording the rpo notifications sent", "file", n.path, "error", err)
		}
	}
}

func (n *rpoNotifier) save() error {
	f := rpoToldFile{Breached: []string{}}
	for k := range n.told {
		f.Breached = append(f.Breached, k)
	}
	slices.Sort(f.Breached)
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(n.path, append(b, '\n'), 0o600)
}

// rpoCheckEvery is how often the target agent checks its VMs' lag against
// their rpo, for the metrics' breach count and the notifications.
const rpoCheckEvery = 10 * time.Second
