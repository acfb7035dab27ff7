package activities

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/testsuite"
)

// A long host call heartbeats all along, and only while it runs.
func TestHeartbeatWhileLongCall(t *testing.T) {
	old := defaultHeartbeatEvery
	defaultHeartbeatEvery = 50 * time.Millisecond
	defer func() { defaultHeartbeatEvery = old }()

	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	var beats atomic.Int32
	oldRecord := recordHeartbeat
	recordHeartbeat = func(ctx context.Context) { beats.Add(1); oldRecord(ctx) }
	defer func() { recordHeartbeat = oldRecord }()
	var after int32
	long := func(ctx context.Context) (string, error) {
		err := heartbeatWhile(ctx, func() error { time.Sleep(600 * time.Millisecond); return nil })
		after = beats.Load()
		time.Sleep(200 * time.Millisecond)
		return "done", err
	}
	env.RegisterActivity(long)
	if _, err := env.ExecuteActivity(long); err != nil {
		t.Fatal(err)
	}
	if after < 5 {
		t.Fatalf("%d heartbeats during a 600 ms call every 50 ms", after)
	}
	if n := beats.Load(); n != after {
		t.Fatalf("%d heartbeats after the call returned", n-after)
	}
	// Outside an activity it just runs the call.
	called := false
	if err := heartbeatWhile(context.Background(), func() error { called = true; return nil }); err != nil || !called {
		t.Fatal("not run outside an activity")
	}
}
