package guest

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/testkit"
)

const vmName = "db01"

type fixture struct {
	ev     *events
	srv    *guestServer
	cfg    config.GuestProcessing
	logs   *testkit.SyncBuffer
	runner *SSHRunner
	pemKey string
}

// newFixture starts a fake guest that accepts the generated key, and a runner
// configured for it with the pinned host key.
func newFixture(t *testing.T, commands map[string]fakeCommand, pre, post []string) *fixture {
	t.Helper()
	keyPath, pub, pemKey := clientKeyFile(t)
	ev := &events{}
	srv := newGuestServer(t, ev, "", pub, commands)
	cfg := config.GuestProcessing{
		Enabled: true, OnFailure: OnFailureFail, Timeout: 10 * time.Second,
		PreFreeze: pre, PostThaw: post,
		SSH:    config.SSH{User: guestUser, KeyFile: keyPath, KnownHosts: knownHostsFile(t, srv.addr, srv.hostSigner.PublicKey())},
		Guests: map[string]string{vmName: srv.addr},
	}
	f := &fixture{ev: ev, srv: srv, cfg: cfg, logs: &testkit.SyncBuffer{}, pemKey: pemKey}
	f.runner = f.newRunner(t)
	return f
}

func (f *fixture) newRunner(t *testing.T) *SSHRunner {
	t.Helper()
	r, err := NewSSHRunner(f.cfg, slog.New(slog.NewTextHandler(f.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checkpointer records the checkpoint into the event list and fails if told to.
func (f *fixture) checkpointer(fail error) func(context.Context, provider.Consistency) error {
	return func(ctx context.Context, c provider.Consistency) error {
		if c == provider.ApplicationConsistent {
			f.ev.add("checkpoint: application-consistent")
		} else {
			f.ev.add("checkpoint: crash-consistent")
		}
		return fail
	}
}

var okCommands = map[string]fakeCommand{
	"sync":               {},
	"fsfreeze -f /data":  {},
	"fsfreeze -u /data":  {},
	"systemctl start db": {},
}

func TestProcessOrderAroundCheckpoint(t *testing.T) {
	f := newFixture(t, okCommands, []string{"sync", "fsfreeze -f /data"}, []string{"fsfreeze -u /data", "systemctl start db"})
	c, warning, err := Process(context.Background(), f.runner, vmName, OnFailureFail, f.checkpointer(nil))
	if err != nil || warning != "" || c != provider.ApplicationConsistent {
		t.Fatalf("Process = %v, %q, %v", c, warning, err)
	}
	want := []string{"guest: sync", "guest: fsfreeze -f /data", "checkpoint: application-consistent", "guest: fsfreeze -u /data", "guest: systemctl start db"}
	if got := f.ev.all(); !reflect.DeepEqual(got, want) {
		t.Fatalf("order:\n%q\nwant\n%q", got, want)
	}
}

func TestPasswordAuthentication(t *testing.T) {
	const secret = "Pa55-w0rd-Secret!"
	ev := &events{}
	srv := newGuestServer(t, ev, secret, nil, okCommands)
	cfg := config.GuestProcessing{
		Timeout: 10 * time.Second, PreFreeze: []string{"sync"},
		SSH:    config.SSH{User: guestUser, PasswordFile: writeSecret(t, secret), KnownHosts: knownHostsFile(t, srv.addr, srv.hostSigner.PublicKey())},
		Guests: map[string]string{vmName: srv.addr},
	}
	r, err := NewSSHRunner(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PreFreeze(context.Background(), vmName); err != nil {
		t.Fatal(err)
	}
	if got := ev.all(); !reflect.DeepEqual(got, []string{"guest: sync"}) {
		t.Fatalf("events %q", got)
	}
}

func TestHostKeyMismatchRejected(t *testing.T) {
	f := newFixture(t, okCommands, []string{"sync"}, []string{"fsfreeze -u /data"})
	// Pin another server's key for the same address.
	other := newGuestServer(t, &events{}, "", nil, nil)
	f.cfg.SSH.KnownHosts = knownHostsFile(t, f.srv.addr, other.hostSigner.PublicKey())
	r := f.newRunner(t)
	err := r.PreFreeze(context.Background(), vmName)
	if err == nil || !strings.Contains(err.Error(), "host key does not match") || !strings.Contains(err.Error(), f.srv.addr) {
		t.Fatalf("err = %v", err)
	}
	if got := f.ev.all(); len(got) != 0 {
		t.Fatalf("commands ran on a guest with the wrong host key: %q", got)
	}

	// A guest missing from known_hosts is refused too.
	f.cfg.SSH.KnownHosts = knownHostsFile(t, "192.0.2.1:22", f.srv.hostSigner.PublicKey())
	r = f.newRunner(t)
	err = r.PreFreeze(context.Background(), vmName)
	if err == nil || !strings.Contains(err.Error(), "host key is not in") {
		t.Fatalf("unknown host: err = %v", err)
	}
	if got := f.ev.all(); len(got) != 0 {
		t.Fatalf("commands ran on an unknown guest: %q", got)
	}
}

func TestNoKnownHostsRefused(t *testing.T) {
	cfg := config.GuestProcessing{SSH: config.SSH{User: guestUser, PasswordFile: writeSecret(t, "x")}}
	if _, err := NewSSHRunner(cfg, nil); err == nil || !strings.Contains(err.Error(), "knownHosts") {
		t.Fatalf("err = %v", err)
	}
}

func TestPerCommandTimeout(t *testing.T) {
	cmds := map[string]fakeCommand{"sync": {}, "wait-for-db-lock": {block: true}, "fsfreeze -f /data": {}, "fsfreeze -u /data": {}}
	f := newFixture(t, cmds, []string{"sync", "wait-for-db-lock", "fsfreeze -f /data"}, []string{"fsfreeze -u /data"})
	f.cfg.Timeout = 200 * time.Millisecond
	f.runner = f.newRunner(t)
	err := f.runner.PreFreeze(context.Background(), vmName)
	if err == nil || !strings.Contains(err.Error(), "command 2 of 3") || !strings.Contains(err.Error(), "timed out after 200ms") {
		t.Fatalf("err = %v", err)
	}
	if got := f.ev.all(); !reflect.DeepEqual(got, []string{"guest: sync", "guest: wait-for-db-lock"}) {
		t.Fatalf("commands after the timeout ran: %q", got)
	}
}

func TestPreFreezeFailurePolicies(t *testing.T) {
	cmds := map[string]fakeCommand{
		"sync":              {},
		"quiesce-db":        {exit: 3, stderr: "quiesce-db: database is busy\n"},
		"fsfreeze -f /data": {},
		"fsfreeze -u /data": {},
	}
	pre, post := []string{"sync", "quiesce-db", "fsfreeze -f /data"}, []string{"fsfreeze -u /data"}

	t.Run("fail", func(t *testing.T) {
		f := newFixture(t, cmds, pre, post)
		_, warning, err := Process(context.Background(), f.runner, vmName, OnFailureFail, f.checkpointer(nil))
		if !errors.Is(err, ErrPreFreeze) {
			t.Fatalf("err = %v, want ErrPreFreeze", err)
		}
		for _, s := range []string{"command 2 of 3", `"quiesce-db"`, "exited with status 3", "standard error is in the proxy's log", vmName} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q lacks %q", err, s)
			}
		}
		// What the guest printed stays in the proxy's log, out of errors
		// (and so out of Temporal's histories).
		if strings.Contains(err.Error(), "database is busy") || !strings.Contains(f.logs.String(), "database is busy") {
			t.Errorf("stderr in the error %q, or not in the log:\n%s", err, f.logs.String())
		}
		if warning != "" {
			t.Errorf("warning %q", warning)
		}
		want := []string{"guest: sync", "guest: quiesce-db", "guest: fsfreeze -u /data"}
		if got := f.ev.all(); !reflect.DeepEqual(got, want) {
			t.Fatalf("events %q, want %q (no checkpoint, post-thaw undoes what ran)", got, want)
		}
	})
	t.Run("continue", func(t *testing.T) {
		f := newFixture(t, cmds, pre, post)
		c, warning, err := Process(context.Background(), f.runner, vmName, OnFailureContinue, f.checkpointer(nil))
		if err != nil || c != provider.CrashConsistent {
			t.Fatalf("Process = %v, %v", c, err)
		}
		if !strings.Contains(warning, "crash-consistent") || !strings.Contains(warning, "exited with status 3") {
			t.Errorf("warning %q", warning)
		}
		want := []string{"guest: sync", "guest: quiesce-db", "checkpoint: crash-consistent", "guest: fsfreeze -u /data"}
		if got := f.ev.all(); !reflect.DeepEqual(got, want) {
			t.Fatalf("events %q, want %q", got, want)
		}
	})
}

func TestPostThawAfterCheckpointFailure(t *testing.T) {
	f := newFixture(t, okCommands, []string{"fsfreeze -f /data"}, []string{"fsfreeze -u /data"})
	cpErr := errors.New("CreateSnapshot failed: invalid state")
	c, _, err := Process(context.Background(), f.runner, vmName, OnFailureFail, f.checkpointer(cpErr))
	if !errors.Is(err, cpErr) || c != provider.ApplicationConsistent {
		t.Fatalf("Process = %v, %v", c, err)
	}
	want := []string{"guest: fsfreeze -f /data", "checkpoint: application-consistent", "guest: fsfreeze -u /data"}
	if got := f.ev.all(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestPostThawAfterCancellation(t *testing.T) {
	f := newFixture(t, okCommands, []string{"fsfreeze -f /data"}, []string{"fsfreeze -u /data"})
	ctx, cancel := context.WithCancel(context.Background())
	_, _, err := Process(ctx, f.runner, vmName, OnFailureFail, func(ctx context.Context, c provider.Consistency) error {
		f.ev.add("checkpoint")
		cancel() // the run is cancelled while the checkpoint is taken
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if got := f.ev.all(); !reflect.DeepEqual(got, []string{"guest: fsfreeze -f /data", "checkpoint", "guest: fsfreeze -u /data"}) {
		t.Fatalf("events %q: the guest was not thawed", got)
	}
}

func TestPostThawRunsEveryCommand(t *testing.T) {
	cmds := map[string]fakeCommand{"fsfreeze -u /data": {exit: 1, stderr: "fsfreeze: /data: not frozen"}, "systemctl start db": {}}
	f := newFixture(t, cmds, nil, []string{"fsfreeze -u /data", "systemctl start db"})
	err := f.runner.PostThaw(context.Background(), vmName)
	if err == nil || strings.Contains(err.Error(), "not frozen") || !strings.Contains(f.logs.String(), "not frozen") {
		t.Fatalf("err = %v, log:\n%s", err, f.logs.String())
	}
	if got := f.ev.all(); !reflect.DeepEqual(got, []string{"guest: fsfreeze -u /data", "guest: systemctl start db"}) {
		t.Fatalf("events %q", got)
	}
	// A failed post-thaw after a good checkpoint is a warning.
	f2 := newFixture(t, cmds, nil, []string{"fsfreeze -u /data"})
	c, warning, err := Process(context.Background(), f2.runner, vmName, OnFailureFail, f2.checkpointer(nil))
	if err != nil || c != provider.ApplicationConsistent || !strings.Contains(warning, "post-thaw") {
		t.Fatalf("Process = %v, %q, %v", c, warning, err)
	}
}

func TestStderrTruncated(t *testing.T) {
	long := strings.Repeat("x", 5000)
	f := newFixture(t, map[string]fakeCommand{"noisy": {exit: 2, stderr: long}}, []string{"noisy"}, nil)
	err := f.runner.PreFreeze(context.Background(), vmName)
	if err == nil || strings.Contains(err.Error(), "xxxx") || len(err.Error()) > 500 {
		t.Fatalf("err (%d bytes) = %.200s…", len(err.Error()), err)
	}
	if log := f.logs.String(); !strings.Contains(log, "(3976 more bytes)") || len(log) > 4000 {
		t.Fatalf("log (%d bytes) = %.200s…", len(log), log)
	}
}

func TestSecretsNeverShown(t *testing.T) {
	const secret = "Pa55-w0rd-Secret!"
	const dbSecret = "TopSecretDB"
	ev := &events{}
	keyPath, _, pemKey := clientKeyFile(t)
	// The guest accepts neither the key nor this password: authentication fails.
	srv := newGuestServer(t, ev, "another-password", nil, map[string]fakeCommand{})
	logs := &testkit.SyncBuffer{}
	cfg := config.GuestProcessing{
		Timeout: 10 * time.Second, PreFreeze: []string{"mysql -p" + dbSecret + " -e 'FLUSH TABLES WITH READ LOCK'"},
		SSH:    config.SSH{User: guestUser, KeyFile: keyPath, PasswordFile: writeSecret(t, secret), KnownHosts: knownHostsFile(t, srv.addr, srv.hostSigner.PublicKey())},
		Guests: map[string]string{vmName: srv.addr},
	}
	r, err := NewSSHRunner(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	_, warning, err := Process(context.Background(), r, vmName, OnFailureContinue, func(context.Context, provider.Consistency) error { return nil })
	if err != nil || !strings.Contains(warning, "unable to authenticate") {
		t.Fatalf("Process = %q, %v", warning, err)
	}
	// Now a guest that accepts the password, where the command fails.
	srv2 := newGuestServer(t, ev, secret, nil, map[string]fakeCommand{
		cfg.PreFreeze[0]: {exit: 1, stderr: "ERROR 2002 (HY000): Can't connect to local MySQL server through socket '/run/mysqld/mysqld.sock' (2)\n"},
	})
	cfg.Guests[vmName] = srv2.addr
	cfg.SSH.KnownHosts = knownHostsFile(t, srv2.addr, srv2.hostSigner.PublicKey())
	r, err = NewSSHRunner(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	err = r.PreFreeze(context.Background(), vmName)
	if err == nil || !strings.Contains(err.Error(), `"mysql" …`) || strings.Contains(err.Error(), "ERROR 2002") || !strings.Contains(logs.String(), "ERROR 2002") {
		t.Fatalf("err = %v", err)
	}
	shown := warning + "\n" + err.Error() + "\n" + logs.String()
	for _, s := range append([]string{secret, dbSecret}, keyMaterial(pemKey)...) {
		if strings.Contains(shown, s) {
			t.Fatalf("secret %q shown in errors or logs:\n%s", s, shown)
		}
	}
	if !strings.Contains(logs.String(), "guest command failed") {
		t.Fatalf("the failure was not logged: %q", logs.String())
	}
}

func TestMissingGuestAddress(t *testing.T) {
	f := newFixture(t, okCommands, []string{"sync"}, nil)
	err := f.runner.PreFreeze(context.Background(), "web02")
	if err == nil || !strings.Contains(err.Error(), `no guest address for VM "web02"`) {
		t.Fatalf("err = %v", err)
	}
}
