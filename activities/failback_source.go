package activities

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/transfer"
)

// A failback sends the replica VM's changes back into the source VM's
// disks. The trust model is the one of replication: the proxy dials, the
// agent accepts, each with its own role's certificate (agent: server, proxy:
// client). Only the direction of the data is reversed: the agent opens a
// short-lived failback channel (OpenFailbackChannel, with a token of its
// own), the proxy connects to it, presents the token, and a
// transfer.Receiver in the proxy writes what the agent's transfer.Sender
// sends on that connection, as the guest would (the host's change tracking
// records it, so the next replication run sends it back incrementally). If
// either process dies, the workflow opens a new channel and sends again:
// rewriting the same blocks is harmless.

// failbackStatus is the agent's one-byte answer to a connection of the
// failback channel, after the token.
const (
	failbackDisk     = 'D' // a disk follows, in the data channel's protocol
	failbackFinished = 'F' // every disk was sent: the failback is complete
	failbackFailed   = 'E' // the send failed; a 2-byte length and the message follow
)

// failbackStatusWait bounds how long the proxy waits for the agent's answer
// (the agent may be opening the next disk).
const failbackStatusWait = 5 * time.Minute

// vmDiskWriter is a source host whose VM disks can be written as by the
// guest (the lab host can).
type vmDiskWriter interface {
	WriteAt(ctx context.Context, vm string, diskIndex int, p []byte, off int64) error
}

// vmStarter is a source host that can start a VM.
type vmStarter interface {
	StartVM(ctx context.Context, name string) error
}

// ReceiveFailback connects to the agent's failback channel and writes the
// disks it sends into VM in.VMID of in.Host until the agent says the change
// set is complete. The agent's host is the job's configured target address;
// only the channel's port comes from the input.
func (s *Source) ReceiveFailback(ctx context.Context, in contract.ReceiveFailbackInput) (int64, error) {
	_, _, spec, err := configuredJob(s.Config, in.Job)
	if err != nil {
		return 0, err
	}
	if err := transfer.ValidName("vm", in.VMID); err != nil {
		return 0, nonRetryable(contract.ErrTypeBadInput, err)
	}
	if !validToken(in.Token) {
		return 0, nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("failback channel token: %d characters, want %d hexadecimal", len(in.Token), 2*tokenBytes))
	}
	addr, host, err := failbackAddress(spec.TargetAddress, in.Address)
	if err != nil {
		return 0, nonRetryable(contract.ErrTypeBadInput, err)
	}
	p, err := s.provider(in.Host)
	if err != nil {
		return 0, err
	}
	w, ok := p.(vmDiskWriter)
	if !ok {
		return 0, nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("failback into a VM of host %s is not supported in this release (lab hosts only)", in.Host))
	}
	if s.TLS == nil {
		return 0, nonRetryable(contract.ErrTypeBadConfig, errors.New("the proxy has no certificate for the data channel (tls.cert, role proxy)"))
	}
	cfg := s.TLS.Clone()
	cfg.ServerName = host
	tgt := &failbackTarget{host: p, writer: w, vmID: in.VMID, token: in.Token}
	recv := transfer.NewReceiver(tgt, cfg, transfer.ReceiverOptions{Logger: s.log()})
	stop := heartbeatEvery(ctx, 3*time.Second, func() any { return tgt.written.Load() })
	defer stop()
	for {
		conn, status, err := dialFailback(ctx, addr, cfg, in.Token)
		if err != nil {
			return tgt.written.Load(), err
		}
		switch status {
		case failbackDisk:
			recv.ServeConn(ctx, conn)
			conn.Close()
		case failbackFinished:
			conn.Close()
			return tgt.written.Load(), nil
		default:
			conn.Close()
			return tgt.written.Load(), fmt.Errorf("the agent's failback send failed (the workflow reads its error when it closes the channel)")
		}
		if err := ctx.Err(); err != nil {
			return tgt.written.Load(), err
		}
	}
}

// failbackAddress is the channel's address: the configured target's host
// and the port the agent opened. A forged input cannot make the proxy dial
// anywhere else.
func failbackAddress(targetAddress, channel string) (addr, host string, err error) {
	host, _, err = net.SplitHostPort(targetAddress)
	if err != nil {
		return "", "", fmt.Errorf("job target address %q: %w", targetAddress, err)
	}
	_, port, err := net.SplitHostPort(channel)
	if err != nil {
		return "", "", fmt.Errorf("failback channel address %q: %w", channel, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("failback channel address %q: port out of range", channel)
	}
	return net.JoinHostPort(host, port), host, nil
}

// dialFailback opens one connection of the channel: TLS as on every data
// channel (this side the proxy, the peer must be an agent), the token, and
// the agent's answer.
func dialFailback(ctx context.Context, addr string, cfg *tls.Config, token string) (*tls.Conn, byte, error) {
	d := net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, 0, fmt.Errorf("failback channel %s: %w", addr, err)
	}
	conn := tls.Client(raw, cfg)
	raw.SetDeadline(time.Now().Add(15 * time.Second))
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, 0, fmt.Errorf("failback channel %s: TLS handshake: %w", addr, err)
	}
	if _, err := io.WriteString(conn, token); err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("failback channel %s: %w", addr, err)
	}
	raw.SetDeadline(time.Now().Add(failbackStatusWait))
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("failback channel %s: no answer after the token (a wrong token is answered by closing): %w", addr, err)
	}
	raw.SetDeadline(time.Time{})
	return conn, b[0], nil
}

// heartbeatEvery records a heartbeat with details() every interval until
// the returned function is called.
func heartbeatEvery(ctx context.Context, interval time.Duration, details func() any) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				activity.RecordHeartbeat(ctx, details())
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { close(done) }
}

// StartVM starts a source VM after a failback.
func (s *Source) StartVM(ctx context.Context, in contract.ShutdownInput) error {
	p, err := s.provider(in.Host)
	if err != nil {
		return err
	}
	st, ok := p.(vmStarter)
	if !ok {
		return nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("host %s cannot start VMs in this release: start VM %s yourself", in.Host, in.VMID))
	}
	return classify(st.StartVM(ctx, in.VMID))
}

// failbackTarget is the transfer.Target of a failback channel: one VM's disks.
type failbackTarget struct {
	host   provider.Provider
	writer vmDiskWriter
	vmID   string
	token  string
	// written counts the bytes written into the VM (heartbeat details).
	written atomic.Int64
}

// Admit lets in only the disks of this channel's VM, sent with the
// channel's token (the agent that opened the channel puts it in the Hello).
func (t *failbackTarget) Admit(ctx context.Context, h transfer.Hello, peer string) error {
	if h.VMID != t.vmID {
		return fmt.Errorf("this failback channel writes VM %s, not %s", t.vmID, h.VMID)
	}
	if subtle.ConstantTimeCompare([]byte(h.Token), []byte(t.token)) != 1 {
		return errors.New("the hello does not carry this failback channel's token")
	}
	return nil
}

func (t *failbackTarget) OpenDisk(ctx context.Context, h transfer.Hello, peer string) (transfer.Sink, error) {
	if h.VMID != t.vmID {
		return nil, fmt.Errorf("this failback channel writes VM %s, not %s", t.vmID, h.VMID)
	}
	vms, err := t.host.VMs(ctx)
	if err != nil {
		return nil, err
	}
	for _, vm := range vms {
		if vm.ID != t.vmID {
			continue
		}
		for i, d := range vm.Disks {
			if d.ID == h.DiskID {
				if d.VirtualSize != h.DiskSize {
					return nil, fmt.Errorf("VM %s disk %s has %d bytes, the replica VM's %d", vm.Name, d.ID, d.VirtualSize, h.DiskSize)
				}
				return &failbackSink{ctx: ctx, w: t.writer, vm: t.vmID, disk: i, written: &t.written}, nil
			}
		}
		return nil, fmt.Errorf("VM %s has no disk %q", vm.Name, h.DiskID)
	}
	return nil, fmt.Errorf("failback: VM %s: %w", t.vmID, provider.ErrVMNotFound)
}

func (t *failbackTarget) Digests(ctx context.Context, h transfer.Hello) (int64, []digest.Sum, error) {
	return 0, nil, transfer.ErrNoDigests
}

// failbackSink writes one disk of the source VM. Every write is durable
// when WriteAt returns (the host syncs it), so Persist has nothing left to
// do; the position is not kept: a new channel receives from the start.
type failbackSink struct {
	ctx     context.Context
	w       vmDiskWriter
	vm      string
	disk    int
	written *atomic.Int64
}

func (k *failbackSink) WriteAt(p []byte, off int64) (int, error) {
	if err := k.w.WriteAt(k.ctx, k.vm, k.disk, p, off); err != nil {
		return 0, err
	}
	k.written.Add(int64(len(p)))
	return len(p), nil
}

func (k *failbackSink) ReadAt(p []byte, off int64) (int, error) {
	return 0, errors.New("failback sinks receive whole blocks only")
}

func (k *failbackSink) Position() int64             { return 0 }
func (k *failbackSink) SetDigest(int64, digest.Sum) {}
func (k *failbackSink) Persist(int64) error         { return nil }
func (k *failbackSink) Complete() error             { return nil }
func (k *failbackSink) Close() error                { return nil }

// vmCreator is a source host that can make a new VM (the lab host can).
type vmCreator interface {
	CreateReplicaTarget(ctx context.Context, name string, sizes []int64, cfg provider.VMConfig) (provider.VM, error)
}

// CreateFailbackVM makes the new, powered-off VM a failback to another host
// writes into: the replica VM's disks (empty) and hardware. A VM of that name
// made by an earlier attempt of the same failback is reused.
func (s *Source) CreateFailbackVM(ctx context.Context, in contract.CreateVMInput) (string, error) {
	p, err := s.provider(in.Host)
	if err != nil {
		return "", err
	}
	c, ok := p.(vmCreator)
	if !ok {
		return "", nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("host %s cannot create VMs in this release: fail back to a lab host, or to the original VM", in.Host))
	}
	// What the new VM gets comes from the workflow: bounded as a replicated
	// VM's description is before anything is created.
	if len(in.Disks) == 0 || len(in.Disks) > maxDisksPerVM {
		return "", nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("new VM %s: %d disks, want 1 to %d", in.Name, len(in.Disks), maxDisksPerVM))
	}
	for _, d := range in.Disks {
		if d.Size <= 0 || d.Size > maxDiskSize {
			return "", nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("new VM %s disk %s: size %d outside (0, 64 TiB]", in.Name, d.ID, d.Size))
		}
	}
	if len(in.Config) > maxVMConfigBytes {
		return "", nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("new VM %s: configuration of %d bytes, at most %d", in.Name, len(in.Config), maxVMConfigBytes))
	}
	var cfg provider.VMConfig
	if len(in.Config) > 0 {
		if err := json.Unmarshal(in.Config, &cfg); err != nil {
			return "", nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("configuration of the new VM: %w", err))
		}
		if err := cfg.Check(); err != nil {
			return "", nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("configuration of the new VM: %w", err))
		}
	}
	sizes := make([]int64, 0, len(in.Disks))
	for _, d := range in.Disks {
		sizes = append(sizes, d.Size)
	}
	vm, err := c.CreateReplicaTarget(ctx, in.Name, sizes, cfg)
	if err != nil {
		return "", classify(err)
	}
	return vm.ID, nil
}
