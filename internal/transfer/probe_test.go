package transfer_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/testkit"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
)

func probeFault(t *testing.T, err error) transfer.ProbeFault {
	t.Helper()
	var pe *transfer.ProbeError
	if !errors.As(err, &pe) {
		t.Fatalf("want a ProbeError, got %v", err)
	}
	return pe.Fault
}

// TestProbeTellsFaultsApart: a working agent answers the ping and touches
// nothing; nothing listening, a peer that is no agent, an agent whose
// certificate the proxy does not trust, and an agent that does not trust the
// proxy are four different answers.
func TestProbeTellsFaultsApart(t *testing.T) {
	ctx := context.Background()
	server, client, _ := testPKI(t)
	target := &transfertest.Target{Dir: t.TempDir()}
	var agentLog testkit.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&agentLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{Logger: logger})
	v, err := transfer.Probe(ctx, addr, client, 5*time.Second)
	if err != nil || v != transfer.Version {
		t.Fatalf("probe of a working agent: %d %v", v, err)
	}
	if n := target.Opened(); n != 0 {
		t.Fatalf("a probe opened %d disks", n)
	}
	// A probe is no transfer: the agent neither admits it as one nor logs
	// it as a transfer that failed (every job run probes).
	testkit.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(agentLog.String(), "answered a probe") {
			return fmt.Errorf("the agent has not logged that it answered a probe; its log:\n%s", agentLog.String())
		}
		return nil
	})
	if strings.Contains(agentLog.String(), "level=WARN") {
		t.Fatalf("the agent logged a warning for a probe:\n%s", agentLog.String())
	}

	// Nothing listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, err = transfer.Probe(ctx, closed, client, 5*time.Second)
	var pe *transfer.ProbeError
	if probeFault(t, err) != transfer.FaultUnreachable || !errors.As(err, &pe) || !pe.Refused {
		t.Fatalf("closed port: %v", err)
	}

	// A peer that is no agent: it answers in plain text.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	if f := probeFault(t, must(transfer.Probe(ctx, plain.Addr().String(), client, 5*time.Second))); f != transfer.FaultNotAgent {
		t.Fatalf("plain-text peer: fault %d", f)
	}

	// An agent with a certificate of another CA.
	otherServer, otherClient, _ := testPKI(t)
	other := startReceiver(t, &transfertest.Target{Dir: t.TempDir()}, otherServer, transfer.ReceiverOptions{Logger: quietLogger()})
	if f := probeFault(t, must(transfer.Probe(ctx, other, client, 5*time.Second))); f != transfer.FaultUntrustedAgent {
		t.Fatalf("agent of another CA: fault %d", f)
	}
	// A proxy whose certificate the agent does not trust (but which trusts the agent).
	mixed := otherClient.Clone()
	mixed.RootCAs = client.RootCAs
	if f := probeFault(t, must(transfer.Probe(ctx, addr, mixed, 5*time.Second))); f != transfer.FaultRefusedSender {
		t.Fatalf("proxy of another CA: fault %d", f)
	}
}

func must(_ int, err error) error {
	if err == nil {
		return errors.New("the probe succeeded")
	}
	return err
}
