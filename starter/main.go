// Command starter is the operator command line of replicator: it starts and
// watches replication runs, manages their schedules, lists, verifies and fails
// over replicas, inspects and converts disk images, and manages lab VMs.
//
// It reads the same configuration as the worker (--config, REPLICATOR_*
// environment variables) and, with no configuration, talks to the defaults of
// `workers --dev` under --data-dir.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code (3 partial, 1 failed) with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withExitCode makes the command exit with code after printing err.
func withExitCode(code int, err error) error { return &exitError{code: code, err: err} }

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "starter",
		Short:         "Operate replicator: runs, schedules, replicas, disks and lab VMs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "", "configuration file (YAML); default: the --dev stack under --data-dir")
	root.PersistentFlags().String("data-dir", ".replicator", "data folder of the --dev stack (lab, datastore, certificates)")
	for _, add := range commands {
		root.AddCommand(add())
	}
	return root
}

// commands registers the subcommands; each cmd_<verb>.go appends to it in init.
var commands []func() *cobra.Command

func main() {
	if err := newRootCommand().Execute(); err != nil {
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if err.Error() != "" {
			fmt.Fprintln(os.Stderr, "starter:", err)
		}
		os.Exit(code)
	}
}
