package guest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/replicator/replicator/config"
)

// SSHRunner runs guest commands on Linux guests over SSH. The guest's host
// key must be in the configured known_hosts file; the key and password are
// read from files once and never logged or put into errors.
type SSHRunner struct {
	cfg      config.GuestProcessing
	user     string
	auth     []ssh.AuthMethod
	hostKeys ssh.HostKeyCallback
	log      *slog.Logger
}

var _ Runner = (*SSHRunner)(nil)

// NewSSHRunner prepares an SSH runner from a job's guest processing settings.
func NewSSHRunner(cfg config.GuestProcessing, log *slog.Logger) (*SSHRunner, error) {
	if log == nil {
		log = slog.Default()
	}
	s := cfg.SSH
	if s.User == "" {
		return nil, errors.New("guest ssh: user is empty")
	}
	if s.KnownHosts == "" {
		return nil, errors.New("guest ssh: knownHosts is empty: guests' host keys must be pinned")
	}
	hostKeys, err := knownhosts.New(s.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("guest ssh: known hosts %s: %w", s.KnownHosts, err)
	}
	var auth []ssh.AuthMethod
	if s.KeyFile != "" {
		pem, err := os.ReadFile(s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("guest ssh: key file: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(pem)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("guest ssh: key file %s is protected by a passphrase, which is not supported", s.KeyFile)
		}
		if err != nil {
			// The parser's message never quotes the key material.
			return nil, fmt.Errorf("guest ssh: key file %s: %v", s.KeyFile, err)
		}
		auth = append(auth, ssh.PublicKeys(signer))
	}
	if s.PasswordFile != "" {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("guest ssh: password file: %w", err)
		}
		password := strings.TrimRight(string(b), "\r\n")
		auth = append(auth, ssh.Password(password))
	}
	if len(auth) == 0 {
		return nil, errors.New("guest ssh: neither keyFile nor passwordFile is set")
	}
	return &SSHRunner{cfg: cfg, user: s.User, auth: auth, hostKeys: hostKeys, log: log}, nil
}

// PreFreeze runs the pre-freeze commands in order; the first failure stops them.
func (r *SSHRunner) PreFreeze(ctx context.Context, vm string) error {
	return r.runPhase(ctx, vm, "pre-freeze", r.cfg.PreFreeze, true)
}

// PostThaw runs every post-thaw command, also after one of them fails.
func (r *SSHRunner) PostThaw(ctx context.Context, vm string) error {
	return r.runPhase(ctx, vm, "post-thaw", r.cfg.PostThaw, false)
}

func (r *SSHRunner) runPhase(ctx context.Context, vm, name string, commands []string, stopAtFirst bool) error {
	if len(commands) == 0 {
		return nil
	}
	addr, err := r.address(vm)
	if err != nil {
		return fmt.Errorf("%s on VM %s: %w", name, vm, err)
	}
	client, err := r.dial(ctx, addr)
	if err != nil {
		return fmt.Errorf("%s on VM %s: %w", name, vm, err)
	}
	defer client.Close()
	p := phase{name: name, vm: vm, where: addr, commands: commands, timeout: r.cfg.Timeout, stopAtFirst: stopAtFirst, log: r.log}
	return p.run(ctx, func(ctx context.Context, cmd string) (commandResult, error) {
		return runSSHCommand(ctx, client, cmd)
	})
}

// address is the guest's host:port from GuestProcessing.Guests.
func (r *SSHRunner) address(vm string) (string, error) {
	addr := strings.TrimSpace(r.cfg.Guests[vm])
	if addr == "" {
		return "", fmt.Errorf("no guest address for VM %q in guestProcessing.guests", vm)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), "22")
	}
	return addr, nil
}

// dial connects and authenticates, checking the host key against known_hosts.
func (r *SSHRunner) dial(ctx context.Context, addr string) (*ssh.Client, error) {
	timeout := r.cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	cfg := &ssh.ClientConfig{
		User:              r.user,
		Auth:              r.auth,
		HostKeyCallback:   r.hostKeys,
		HostKeyAlgorithms: pinnedAlgorithms(r.hostKeys, addr),
		Timeout:           timeout,
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to guest %s: %w", addr, err)
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	stop()
	if err != nil {
		conn.Close()
		var keyErr *knownhosts.KeyError
		if errors.As(err, &keyErr) {
			if len(keyErr.Want) == 0 {
				return nil, fmt.Errorf("guest %s: host key is not in %s: refusing to connect", addr, r.cfg.SSH.KnownHosts)
			}
			return nil, fmt.Errorf("guest %s: host key does not match %s (possible man-in-the-middle): refusing to connect", addr, r.cfg.SSH.KnownHosts)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh handshake with guest %s: %w", addr, ctx.Err())
		}
		return nil, fmt.Errorf("ssh handshake with guest %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// pinnedAlgorithms returns the host key algorithms of the keys known_hosts
// pins for addr, so the server is asked for a key type that can be checked
// (otherwise it may offer another of its keys and fail the check).
func pinnedAlgorithms(cb ssh.HostKeyCallback, addr string) []string {
	probe := probeKey{}
	err := cb(knownhosts.Normalize(addr), &net.TCPAddr{IP: net.IPv4zero}, probe)
	var keyErr *knownhosts.KeyError
	if !errors.As(err, &keyErr) || len(keyErr.Want) == 0 {
		return nil
	}
	var algs []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			algs = append(algs, a)
		}
	}
	for _, k := range keyErr.Want {
		if k.Key.Type() == ssh.KeyAlgoRSA {
			add(ssh.KeyAlgoRSASHA512)
			add(ssh.KeyAlgoRSASHA256)
		}
		add(k.Key.Type())
	}
	return algs
}

// probeKey is a public key no known_hosts line can match.
type probeKey struct{}

func (probeKey) Type() string                        { return "replicator-probe" }
func (probeKey) Marshal() []byte                     { return []byte("replicator-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key") }

// runSSHCommand runs one command in a new session. When ctx ends first, the
// session is sent SIGKILL and closed.
func runSSHCommand(ctx context.Context, client *ssh.Client, cmd string) (commandResult, error) {
	sess, err := client.NewSession()
	if err != nil {
		return commandResult{}, fmt.Errorf("open session: %w", err)
	}
	defer sess.Close()
	stderr := &limitedBuffer{limit: stderrLimit}
	sess.Stderr = stderr
	done := make(chan error, 1)
	go func() { done <- sess.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGKILL)
		sess.Close()
		// The session may still be writing stderr; it is not read.
		return commandResult{}, ctx.Err()
	}
	var exitErr *ssh.ExitError
	switch {
	case err == nil:
		return commandResult{}, nil
	case errors.As(err, &exitErr) && exitErr.Signal() != "":
		return commandResult{Stderr: stderr.String()}, fmt.Errorf("killed by signal %s%s", exitErr.Signal(), stderrNote(stderr.String()))
	case errors.As(err, &exitErr):
		return commandResult{ExitStatus: exitErr.ExitStatus(), Stderr: stderr.String()}, nil
	default:
		return commandResult{Stderr: stderr.String()}, err
	}
}
