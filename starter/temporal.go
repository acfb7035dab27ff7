package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/temporalclient"
)

// loadConfig reads the configuration of --config (or the --dev defaults
// under --data-dir), with REPLICATOR_* environment overrides.
func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	return config.Load(config.LoadOptions{File: flagValue(cmd, "config"), DataDir: flagValue(cmd, "data-dir")})
}

// flagValue is the value of the flag name of cmd or its parents ("" where
// there is no such flag).
func flagValue(cmd *cobra.Command, name string) string {
	if f := cmd.Flag(name); f != nil {
		return f.Value.String()
	}
	return ""
}

// dialTemporal connects to the Temporal frontend of the configuration.
func dialTemporal(cmd *cobra.Command) (client.Client, *config.Config, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, nil, err
	}
	logger := sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn})))
	c, err := temporalclient.Dial(cfg.Temporal, logger, nil)
	if err != nil {
		if cmd.Flag("config").Value.String() == "" {
			err = fmt.Errorf("%w (is `go run ./workers --dev` running?)", err)
		}
		return nil, nil, err
	}
	return c, cfg, nil
}
