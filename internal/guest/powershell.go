package guest

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf16"

	"github.com/replicator/replicator/config"
)

// ErrRequiresWindows: PowerShell Direct runs from a Hyper-V host only.
var ErrRequiresWindows = errors.New("PowerShell Direct requires a Windows Hyper-V host")

// Markers of the script's own failures, distinct from the guest command's:
// the first line of standard error starts with one of them and the exit
// status is psCannotConnectExit. New-PSSession fails, and the script says so,
// when the VM is off, has no PowerShell Direct (not Windows 10/Server 2016 or
// later), or refuses the credentials.
const (
	psCannotConnect     = "replicator: cannot connect through PowerShell Direct: "
	psNoStatus          = "replicator: the guest returned no exit status"
	psCannotConnectExit = "254"
)

// psScript is the fixed script powershell.exe runs for one guest command.
// Everything variable reaches it out of band, never spliced into code: the
// VM, user and command through environment variables, the password as the
// first line of standard input (a command line is visible to every process
// of the host). The command runs in the guest as PowerShell; its exit code
// (or 1 when it throws) becomes powershell.exe's exit code, and its output
// is written as an error record (to stderr) when it fails.
const psScript = `$ErrorActionPreference = 'Stop'
$secure = ConvertTo-SecureString -String ([Console]::In.ReadLine()) -AsPlainText -Force
$credential = New-Object System.Management.Automation.PSCredential -ArgumentList $env:REPLICATOR_GUEST_USER, $secure
$target = @{}
if ($env:REPLICATOR_GUEST_VMID) { $target.VMId = [guid]$env:REPLICATOR_GUEST_VMID } else { $target.VMName = $env:REPLICATOR_GUEST_VM }
try {
    $session = New-PSSession @target -Credential $credential -ErrorAction Stop
} catch {
    [Console]::Error.WriteLine('` + psCannotConnect + `' + $_.ToString())
    exit ` + psCannotConnectExit + `
}
try {
    $status = Invoke-Command -Session $session -ErrorAction Continue -ArgumentList $env:REPLICATOR_GUEST_COMMAND -ScriptBlock {
        param([string]$command)
        $global:LASTEXITCODE = 0
        try {
            $output = & ([scriptblock]::Create($command)) 2>&1 | Out-String
        } catch {
            Write-Error -Message ($_.ToString()) -ErrorAction Continue
            return 1
        }
        if ($LASTEXITCODE) {
            Write-Error -Message $output -ErrorAction Continue
            return $LASTEXITCODE
        }
        return 0
    }
} finally {
    Remove-PSSession -Session $session -ErrorAction SilentlyContinue
}
$last = $status | Select-Object -Last 1
if ($null -eq $last) {
    [Console]::Error.WriteLine('` + psNoStatus + `')
    exit ` + psCannotConnectExit + `
}
exit [int]$last
`

var guidPattern = regexp.MustCompile(`^\{?[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}?$`)

// psInvocation is one powershell.exe run: program, arguments, extra
// environment and standard input.
type psInvocation struct {
	Name  string
	Args  []string
	Env   []string
	Stdin string
}

// String describes the invocation without its standard input (the password).
func (p psInvocation) String() string {
	return p.Name + " " + strings.Join(p.Args[:len(p.Args)-1], " ") + " <script>"
}

// powerShellDirectCommand builds the powershell.exe invocation that runs
// command in the VM (a name, or the VM's GUID) as user.
func powerShellDirectCommand(vm, command, user, password string) (psInvocation, error) {
	for what, v := range map[string]string{"VM": vm, "command": command, "user": user, "password": password} {
		if strings.ContainsRune(v, 0) {
			return psInvocation{}, fmt.Errorf("PowerShell Direct: %s contains a NUL character", what)
		}
	}
	if strings.ContainsAny(password, "\r\n") {
		return psInvocation{}, errors.New("PowerShell Direct: the password contains a line break")
	}
	env := []string{"REPLICATOR_GUEST_USER=" + user, "REPLICATOR_GUEST_COMMAND=" + command}
	if guidPattern.MatchString(vm) {
		env = append(env, "REPLICATOR_GUEST_VMID="+strings.Trim(vm, "{}"), "REPLICATOR_GUEST_VM=")
	} else {
		env = append(env, "REPLICATOR_GUEST_VM="+vm, "REPLICATOR_GUEST_VMID=")
	}
	return psInvocation{
		Name:  "powershell.exe",
		Args:  []string{"-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand", encodePowerShell(psScript)},
		Env:   env,
		Stdin: password + "\n",
	}, nil
}

// encodePowerShell encodes a script for -EncodedCommand: base64 of UTF-16LE.
func encodePowerShell(script string) string {
	units := utf16.Encode([]rune(script))
	b := make([]byte, 2*len(units))
	for i, u := range units {
		binary.LittleEndian.PutUint16(b[2*i:], u)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// psExec runs one invocation and reports how it ended.
type psExec func(ctx context.Context, inv psInvocation) (commandResult, error)

// PowerShellDirect runs guest commands in Windows guests through PowerShell
// Direct (Invoke-Command -VMName/-VMId) from the Hyper-V host, which needs no
// network path to the guest.
type PowerShellDirect struct {
	cfg      config.GuestProcessing
	user     string
	password string
	log      *slog.Logger
	exec     psExec
}

var _ Runner = (*PowerShellDirect)(nil)

func newPowerShellDirect(cfg config.GuestProcessing, user, passwordFile string, log *slog.Logger, exec psExec) (*PowerShellDirect, error) {
	if log == nil {
		log = slog.Default()
	}
	if user == "" {
		return nil, errors.New("PowerShell Direct: guest user is empty")
	}
	if passwordFile == "" {
		return nil, errors.New("PowerShell Direct: guest password file is empty")
	}
	b, err := os.ReadFile(passwordFile)
	if err != nil {
		return nil, fmt.Errorf("PowerShell Direct: password file: %w", err)
	}
	return &PowerShellDirect{cfg: cfg, user: user, password: strings.TrimRight(string(b), "\r\n"), log: log, exec: exec}, nil
}

// PreFreeze runs the pre-freeze commands in order; the first failure stops them.
func (r *PowerShellDirect) PreFreeze(ctx context.Context, vm string) error {
	return r.runPhase(ctx, vm, "pre-freeze", r.cfg.PreFreeze, true)
}

// PostThaw runs every post-thaw command, also after one of them fails.
func (r *PowerShellDirect) PostThaw(ctx context.Context, vm string) error {
	return r.runPhase(ctx, vm, "post-thaw", r.cfg.PostThaw, false)
}

func (r *PowerShellDirect) runPhase(ctx context.Context, vm, name string, commands []string, stopAtFirst bool) error {
	p := phase{name: name, vm: vm, where: "PowerShell Direct", commands: commands, timeout: r.cfg.Timeout, stopAtFirst: stopAtFirst, log: r.log}
	return p.run(ctx, func(ctx context.Context, cmd string) (commandResult, error) {
		inv, err := powerShellDirectCommand(vm, cmd, r.user, r.password)
		if err != nil {
			return commandResult{}, err
		}
		res, err := r.exec(ctx, inv)
		if err != nil {
			return res, err
		}
		return res, scriptFailure(res)
	})
}

// scriptFailure turns the script's own failures (no connection, no status)
// into errors: they are not the guest command's exit status.
func scriptFailure(res commandResult) error {
	if strconv.Itoa(res.ExitStatus) != psCannotConnectExit {
		return nil
	}
	first, _, _ := strings.Cut(res.Stderr, "\n")
	first = strings.TrimRight(first, "\r")
	switch {
	case strings.HasPrefix(first, psCannotConnect):
		return fmt.Errorf("cannot connect to the VM through PowerShell Direct: %s", strings.TrimPrefix(first, psCannotConnect))
	case strings.HasPrefix(first, psNoStatus):
		return errors.New("the guest returned no exit status")
	}
	return nil // the guest command itself exited 254
}
