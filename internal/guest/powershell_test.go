package guest

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/replicator/replicator/config"
)

func decodePowerShell(t *testing.T, enc string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(b)%2 != 0 {
		t.Fatalf("encoded command: %v (%d bytes)", err, len(b))
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

func TestPowerShellDirectCommand(t *testing.T) {
	const password = "W1nd0ws-S3cret"
	vm := `sql'01"; Remove-Item C:\ -Recurse #`
	command := `& "C:\Program Files\App\freeze.exe" --all`
	inv, err := powerShellDirectCommand(vm, command, `CONTOSO\backup`, password)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Name != "powershell.exe" {
		t.Errorf("program %q", inv.Name)
	}
	wantArgs := []string{"-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand"}
	if !reflect.DeepEqual(inv.Args[:len(inv.Args)-1], wantArgs) {
		t.Errorf("args %q", inv.Args)
	}
	if got := decodePowerShell(t, inv.Args[len(inv.Args)-1]); got != psScript {
		t.Errorf("the encoded script is not the fixed script:\n%s", got)
	}
	for _, a := range inv.Args {
		for _, s := range []string{password, "sql'01", "freeze.exe", "backup"} {
			if strings.Contains(a, s) {
				t.Errorf("argument %q carries %q: variable text must not reach the command line", a, s)
			}
		}
	}
	wantEnv := []string{`REPLICATOR_GUEST_USER=CONTOSO\backup`, "REPLICATOR_GUEST_COMMAND=" + command, "REPLICATOR_GUEST_VM=" + vm, "REPLICATOR_GUEST_VMID="}
	if !reflect.DeepEqual(inv.Env, wantEnv) {
		t.Errorf("env %q, want %q", inv.Env, wantEnv)
	}
	if strings.Contains(strings.Join(inv.Env, "\n"), password) || inv.Stdin != password+"\n" {
		t.Errorf("the password must travel on stdin only")
	}
	if strings.Contains(inv.String(), password) {
		t.Errorf("String() shows the password")
	}

	byID, err := powerShellDirectCommand("{4C0F3D7E-9A8B-4E21-B6C3-1D2E3F4A5B6C}", "Get-Date", "admin", password)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(byID.Env[2:], []string{"REPLICATOR_GUEST_VMID=4C0F3D7E-9A8B-4E21-B6C3-1D2E3F4A5B6C", "REPLICATOR_GUEST_VM="}) {
		t.Errorf("a VM GUID is passed as VMId: %q", byID.Env)
	}
	if _, err := powerShellDirectCommand("vm", "a\x00b", "u", "p"); err == nil {
		t.Error("a NUL in the command was accepted")
	}
	if _, err := powerShellDirectCommand("vm", "c", "u", "p\nwhoami"); err == nil {
		t.Error("a line break in the password was accepted")
	}
}

func TestPowerShellDirectRunner(t *testing.T) {
	ev := &events{}
	exec := func(ctx context.Context, inv psInvocation) (commandResult, error) {
		var cmd string
		for _, e := range inv.Env {
			if v, ok := strings.CutPrefix(e, "REPLICATOR_GUEST_COMMAND="); ok {
				cmd = v
			}
		}
		ev.add("guest: " + cmd)
		switch cmd {
		case "Stop-Service sqlwriter-busy":
			return commandResult{ExitStatus: 5, Stderr: "Service is busy"}, nil
		case "Start-Sleep 3600":
			<-ctx.Done()
			return commandResult{}, ctx.Err()
		}
		return commandResult{}, nil
	}
	cfg := config.GuestProcessing{Timeout: 100 * time.Millisecond, PreFreeze: []string{"Write-VssFreeze", "Stop-Service sqlwriter-busy", "never"}, PostThaw: []string{"Start-Sleep 3600", "Start-Service sqlwriter"}}
	r, err := newPowerShellDirect(cfg, "admin", writeSecret(t, "pw"), slog.New(slog.DiscardHandler), exec)
	if err != nil {
		t.Fatal(err)
	}
	err = r.PreFreeze(context.Background(), "sql01")
	if err == nil || !strings.Contains(err.Error(), "exited with status 5 (its standard error is in the proxy's log)") || strings.Contains(err.Error(), "Service is busy") || !strings.Contains(err.Error(), "PowerShell Direct") {
		t.Fatalf("pre-freeze err = %v", err)
	}
	err = r.PostThaw(context.Background(), "sql01")
	if err == nil || !strings.Contains(err.Error(), "timed out after 100ms") {
		t.Fatalf("post-thaw err = %v", err)
	}
	want := []string{"guest: Write-VssFreeze", "guest: Stop-Service sqlwriter-busy", "guest: Start-Sleep 3600", "guest: Start-Service sqlwriter"}
	if got := ev.all(); !reflect.DeepEqual(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// The script's own failures are failures with their reason, never a
// success: a VM it cannot connect to, an answer without a status. A guest
// command that itself exits 254 stays that command's exit status.
func TestPowerShellDirectScriptFailures(t *testing.T) {
	for _, tc := range []struct {
		res  commandResult
		want string
	}{
		{commandResult{ExitStatus: 254, Stderr: psCannotConnect + "The virtual machine sql01 is not in running state.\r\n"}, "cannot connect to the VM through PowerShell Direct: The virtual machine sql01 is not in running state."},
		{commandResult{ExitStatus: 254, Stderr: psNoStatus + "\n"}, "the guest returned no exit status"},
		// The guest's own standard error goes to the proxy's log only, never
		// into the error that reaches the workflow history.
		{commandResult{ExitStatus: 254, Stderr: "disk full"}, "exited with status 254 (its standard error is in the proxy's log)"},
	} {
		exec := func(ctx context.Context, inv psInvocation) (commandResult, error) { return tc.res, nil }
		r, err := newPowerShellDirect(config.GuestProcessing{Timeout: time.Second, PreFreeze: []string{"Write-VssFreeze"}}, "admin", writeSecret(t, "pw"), slog.New(slog.DiscardHandler), exec)
		if err != nil {
			t.Fatal(err)
		}
		err = r.PreFreeze(context.Background(), "sql01")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "disk full") {
			t.Errorf("err = %v carries the guest's standard error", err)
		}
	}
	// The script checks the connection before it runs anything.
	for _, want := range []string{"New-PSSession @target -Credential $credential -ErrorAction Stop", "exit " + psCannotConnectExit, "-Session $session"} {
		if !strings.Contains(psScript, want) {
			t.Errorf("the script lacks %q", want)
		}
	}
}
