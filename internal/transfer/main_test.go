package transfer_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
)

// Environment of the receiver process that TestReceiverKilled starts from
// this test binary.
const (
	envReceiverDir = "TRANSFER_TEST_RECEIVER_DIR" // target directory
	envReceiverPKI = "TRANSFER_TEST_RECEIVER_PKI" // EnsureDev directory
	envReceiverOut = "TRANSFER_TEST_RECEIVER_OUT" // file to write the address to
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(envReceiverDir); dir != "" {
		if err := runReceiverProcess(dir, os.Getenv(envReceiverPKI), os.Getenv(envReceiverOut)); err != nil {
			fmt.Fprintln(os.Stderr, "receiver:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// runReceiverProcess serves a file-backed target until killed.
func runReceiverProcess(dir, pkiDir, out string) error {
	files, err := pki.EnsureDev(pkiDir)
	if err != nil {
		return err
	}
	conf, err := files.ServerTLS()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, []byte(ln.Addr().String()), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Clean(out)); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	r := transfer.NewReceiver(&transfertest.Target{Dir: dir}, conf, transfer.ReceiverOptions{PersistBytes: 128 << 10, Logger: quietLogger()})
	return r.Serve(ctx, ln)
}
