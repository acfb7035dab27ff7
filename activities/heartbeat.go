package activities

import (
	"context"
	"time"

	"go.temporal.io/sdk/activity"
)

// recordHeartbeat is activity.RecordHeartbeat (the SDK throttles what it sends).
var recordHeartbeat = func(ctx context.Context) { activity.RecordHeartbeat(ctx) }

// defaultHeartbeatEvery is the interval when the activity has no heartbeat timeout.
var defaultHeartbeatEvery = 10 * time.Second

// heartbeatWhile runs f and heartbeats every few seconds until it returns:
// a host job (a checkpoint with the guest's freeze, a merge) or a guest
// command may take far longer than the activity's heartbeat timeout, and
// without heartbeats Temporal would start a second attempt while the first
// one's job still runs on the host. The heartbeats say that this worker is
// alive; a worker that dies stops them, and the timeout then retries.
func heartbeatWhile(ctx context.Context, f func() error) error {
	if !activity.IsActivity(ctx) {
		return f()
	}
	every := defaultHeartbeatEvery
	if t := activity.GetInfo(ctx).HeartbeatTimeout; t > 0 {
		every = max(time.Second, t/4)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				recordHeartbeat(ctx)
			}
		}
	}()
	err := f()
	close(done)
	<-stopped
	return err
}
