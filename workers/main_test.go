package main

import (
	"os"
	"testing"
)

// TestMain starts the child processes that end-to-end tests kill: a worker
// with the roles of REPLICATOR_TEST_ROLES (default proxy) on the
// configuration REPLICATOR_TEST_PROXY_CONFIG, or the Temporal server
// (TestEndToEndTemporalServerKilledMidRun); otherwise it runs the tests.
func TestMain(m *testing.M) {
	if file := os.Getenv("REPLICATOR_TEST_PROXY_CONFIG"); file != "" {
		roles := os.Getenv("REPLICATOR_TEST_ROLES")
		if roles == "" {
			roles = "proxy"
		}
		os.Exit(run([]string{"--config", file, "--roles", roles}))
	}
	if dir := os.Getenv("REPLICATOR_TEST_TEMPORAL_DIR"); dir != "" {
		runTemporalServer(dir)
	}
	os.Exit(m.Run())
}
