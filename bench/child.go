//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"time"

	"github.com/replicator/replicator/internal/agent"
	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/lab"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/transfer"
)

// childResult is what one replication child prints on stdout.
type childResult struct {
	Mode     string          `json:"mode"`
	Level    string          `json:"level"`
	Point    string          `json:"point"`
	Transfer transfer.Result `json:"transfer"`
	// TransferSeconds is the time of SendDisk alone (the child's wall time
	// also counts start-up, the TLS handshake and the commit).
	TransferSeconds float64 `json:"transferSeconds"`
}

// runChild replicates one disk of one lab checkpoint to an agent in this
// process, over mutual TLS on loopback, and commits the restore point: the
// proxy and the target of one run, in one process whose CPU time and peak
// RSS the parent reads from wait4.
func runChild(args []string) error {
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	labDir := fs.String("lab", "", "lab host folder")
	vmName := fs.String("vm", "", "lab VM")
	checkpoint := fs.String("checkpoint", "", "checkpoint to send")
	reference := fs.String("reference", "", "reference point of the changed ranges (mode cbt)")
	datastore := fs.String("datastore", "", "agent datastore")
	pkiDir := fs.String("pki", "", "certificate folder (pki.EnsureDev)")
	mode := fs.String("mode", "full", "full, cbt or digest")
	levelName := fs.String("level", "optimal", "compression level")
	blockSize := fs.Int64("block-size", 1<<20, "block size")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	traceFile := fs.String("trace", "", "write an execution trace of the run to this file (go tool trace: where goroutines wait)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level, err := codec.ParseLevel(*levelName)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			return err
		}
		if err := trace.Start(f); err != nil {
			return err
		}
		defer func() { trace.Stop(); f.Close() }()
	}
	files, err := pki.EnsureDev(*pkiDir)
	if err != nil {
		return err
	}
	serverTLS, err := files.ServerTLS()
	if err != nil {
		return err
	}
	clientTLS, err := files.ClientTLS()
	if err != nil {
		return err
	}

	host := lab.New("bench", *labDir)
	vms, err := host.VMs(ctx)
	if err != nil {
		return err
	}
	var vm provider.VM
	for _, v := range vms {
		if v.Name == *vmName {
			vm = v
		}
	}
	if vm.ID == "" {
		return fmt.Errorf("lab %s: no VM %s", *labDir, *vmName)
	}
	diskID := vm.Disks[0].ID
	img, err := host.OpenDisk(ctx, vm.ID, *checkpoint, diskID)
	if err != nil {
		return err
	}
	defer img.Close()

	a, err := agent.New(*datastore, fmt.Sprintf("bench agent pid %d", os.Getpid()))
	if err != nil {
		return err
	}
	defer a.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	recv := transfer.NewReceiver(a, serverTLS, transfer.ReceiverOptions{Logger: quiet, SinkBufferBytes: replica.WriteBufferBytes})
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- recv.Serve(sctx, ln) }()
	defer func() { stop(); <-served }()

	const job = "bench"
	cvm := contract.VM{ID: vm.ID, Name: vm.Name, Generation: vm.Generation,
		Disks: []contract.Disk{{ID: diskID, VirtualSize: img.Size(), SectorSize: img.SectorSize()}}}
	if _, err := a.Prepare(ctx, job, cvm); err != nil {
		return err
	}
	begun, err := a.Begin(ctx, contract.BeginInput{Job: job, VMID: vm.ID, RunID: "run-" + *checkpoint,
		CheckpointID: *checkpoint, ChangeTracking: *mode, BlockSize: *blockSize})
	if err != nil {
		return err
	}
	opts := transfer.SendOptions{Job: job, VMID: vm.ID, DiskID: diskID, CheckpointID: *checkpoint,
		BlockSize: *blockSize, Compression: level, Token: begun.Token}
	var plan blockplan.Plan
	switch *mode {
	case "full":
		plan = blockplan.Full(img.Size(), *blockSize, img.Allocated())
	case "cbt":
		changed, err := host.ChangedRanges(ctx, vm.ID, *checkpoint, diskID, *reference)
		if err != nil {
			return err
		}
		plan = blockplan.Changed(img.Size(), *blockSize, changed)
	case "digest":
		opts.CompareDigests = true
	default:
		return fmt.Errorf("mode %q: want full, cbt or digest", *mode)
	}
	sender := &transfer.Sender{Address: ln.Addr().String(), TLS: clientTLS}
	start := time.Now()
	res, err := sender.SendDisk(ctx, img, plan, nil, opts, nil)
	elapsed := time.Since(start)
	if err != nil {
		return fmt.Errorf("send %s disk %s: %w", *checkpoint, diskID, err)
	}
	if *mode == "digest" && !res.DigestsCompared {
		return errors.New("digest mode: the agent had no digests of a previous point")
	}
	point, err := a.Commit(ctx, job, vm.ID, *checkpoint, 0)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(childResult{Mode: *mode, Level: level.String(), Point: point,
		Transfer: res, TransferSeconds: elapsed.Seconds()})
}
