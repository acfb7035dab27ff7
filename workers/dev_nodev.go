//go:build nodev

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
)

// runDev refuses --dev: this build leaves out the embedded Temporal server,
// so only production workers (--config FILE) can run.
func runDev(_ context.Context, _ options, _ roleSet, _ *slog.Logger) int {
	fmt.Fprintln(os.Stderr, "workers: --dev is not part of this build: it was built with -tags nodev, which leaves out the embedded Temporal server "+
		"(the container image is built so); run `go run ./workers --dev` from the source tree, or give --config FILE to work against a Temporal cluster")
	return 2
}
