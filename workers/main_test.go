package main

import (
	"os"
	"testing"
)

// TestMain starts the child processes that end-to-end tests kill: the proxy
// role (TestEndToEndProxyKilledMidTransfer) and the Temporal server
// (TestEndToEndTemporalServerKilledMidRun); otherwise it runs the tests.
func TestMain(m *testing.M) {
	if file := os.Getenv("REPLICATOR_TEST_PROXY_CONFIG"); file != "" {
		os.Exit(run([]string{"--config", file, "--roles", "proxy"}))
	}
	if dir := os.Getenv("REPLICATOR_TEST_TEMPORAL_DIR"); dir != "" {
		runTemporalServer(dir)
	}
	os.Exit(m.Run())
}
