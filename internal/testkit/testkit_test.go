package testkit

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	start := time.Now()
	Eventually(t, time.Minute, time.Millisecond, func() error {
		calls++
		if calls < 4 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 4 {
		t.Errorf("check called %d times, want 4", calls)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s for 3 short pauses", d)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and stops
// the goroutine, as testing.T does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(f)
}

func TestEventuallyFailsWithTheLastErrorAfterTheLimit(t *testing.T) {
	rec := &fatalRecorder{TB: t}
	calls := 0
	start := time.Now()
	func() {
		defer func() {
			if r := recover(); r != rec {
				t.Fatalf("Eventually did not fail the test (recovered %v)", r)
			}
		}()
		Eventually(rec, 100*time.Millisecond, 10*time.Millisecond, func() error {
			calls++
			return errors.New("replica has 2 points, want 3")
		})
	}()
	if !strings.Contains(rec.msg, "not within 100ms: replica has 2 points, want 3") {
		t.Errorf("failure says %q", rec.msg)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("gave up after %s, want just past 100ms", d)
	}
	if calls < 3 {
		t.Errorf("check called %d times in 100ms", calls)
	}
}
