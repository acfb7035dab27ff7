package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/transfer"
)

// A failback runs the data channel the other way round: the agent sends the
// replica VM's changes with transfer.Sender, and a transfer.Receiver in the
// proxy writes them into the source VM's disks, as the guest would (the
// host's change tracking records them, so the next replication run sends
// them back incrementally). The channel lives in the proxy process between
// OpenFailbackChannel and CloseFailbackChannel; if the process dies, the
// workflow opens a new one and sends again: rewriting the same blocks is
// harmless.

// failbackChannels are the open failback channels of a proxy, by operation.
type failbackChannels struct {
	mu   sync.Mutex
	open map[string]*failbackChannel
}

type failbackChannel struct {
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
}

// vmDiskWriter is a source host whose VM disks can be written as by the
// guest (the lab host can).
type vmDiskWriter interface {
	WriteAt(ctx context.Context, vm string, diskIndex int, p []byte, off int64) error
}

// vmStarter is a source host that can start a VM.
type vmStarter interface {
	StartVM(ctx context.Context, name string) error
}

// OpenFailbackChannel starts a receiver that writes into the disks of VM
// in.VMID of in.Host, listening on this proxy's address toward the target,
// and returns its address. Opening it again for the same operation returns
// the same channel.
func (s *Source) OpenFailbackChannel(ctx context.Context, in contract.FailbackChannelInput) (string, error) {
	p, err := s.provider(in.Host)
	if err != nil {
		return "", err
	}
	w, ok := p.(vmDiskWriter)
	if !ok {
		return "", nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("failback into a VM of host %s is not supported in this release (lab hosts only)", in.Host))
	}
	if s.ServerTLS == nil {
		return "", nonRetryable(contract.ErrTypeBadConfig, errors.New("the proxy has no server certificate for the failback channel (tls.cert must allow server authentication)"))
	}
	s.failback.mu.Lock()
	defer s.failback.mu.Unlock()
	if c, ok := s.failback.open[in.Operation]; ok {
		return c.addr, nil
	}
	ip := "127.0.0.1"
	if in.TargetAddress != "" {
		// The address this machine uses toward the target is one the
		// target can reach back (no packet is sent: UDP only routes).
		if c, err := net.Dial("udp", in.TargetAddress); err == nil {
			ip = c.LocalAddr().(*net.UDPAddr).IP.String()
			c.Close()
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", fmt.Errorf("failback channel: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	tgt := &failbackTarget{host: p, writer: w, vmID: in.VMID}
	recv := transfer.NewReceiver(tgt, s.ServerTLS, transfer.ReceiverOptions{Logger: s.Logger})
	c := &failbackChannel{addr: ln.Addr().String(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		recv.Serve(rctx, ln)
	}()
	if s.failback.open == nil {
		s.failback.open = map[string]*failbackChannel{}
	}
	s.failback.open[in.Operation] = c
	return c.addr, nil
}

// CloseFailbackChannel stops the operation's channel (none open is not an error).
func (s *Source) CloseFailbackChannel(ctx context.Context, in contract.FailbackChannelInput) error {
	s.failback.mu.Lock()
	c, ok := s.failback.open[in.Operation]
	delete(s.failback.open, in.Operation)
	s.failback.mu.Unlock()
	if ok {
		c.cancel()
		<-c.done
	}
	return nil
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
}

// Admit lets in only the replica VM's disks of this channel's VM.
func (t *failbackTarget) Admit(ctx context.Context, h transfer.Hello, peer string) error {
	if h.VMID != t.vmID {
		return fmt.Errorf("this failback channel writes VM %s, not %s", t.vmID, h.VMID)
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
				return &failbackSink{ctx: ctx, w: t.writer, vm: t.vmID, disk: i}, nil
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
	ctx  context.Context
	w    vmDiskWriter
	vm   string
	disk int
}

func (k *failbackSink) WriteAt(p []byte, off int64) (int, error) {
	if err := k.w.WriteAt(k.ctx, k.vm, k.disk, p, off); err != nil {
		return 0, err
	}
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
	var cfg provider.VMConfig
	if len(in.Config) > 0 {
		if err := json.Unmarshal(in.Config, &cfg); err != nil {
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
