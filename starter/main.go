// Command starter is the operator command line of replicator: it starts and
// watches replication runs, manages their schedules, lists, verifies and fails
// over replicas, inspects and converts disk images, and manages lab VMs.
//
// It reads the same configuration as the worker (--config, REPLICATOR_*
// environment variables) and, with no configuration, talks to the defaults of
// `workers --dev` under --data-dir.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

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
		// A bad --output fails before the command does anything.
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			_, err := outputFormat(cmd, outputText)
			return err
		},
	}
	root.PersistentFlags().String("config", "", "configuration file (YAML); default: the --dev stack under --data-dir")
	root.PersistentFlags().String("data-dir", ".replicator", "data folder of the --dev stack (lab, datastore, certificates)")
	addOutputFlags(root)
	root.AddCommand(
		// runs and their schedules (Temporal)
		newRunCommand(),
		newStatusCommand(),
		newScheduleCommand(),
		// replicas on the target's datastore
		newReplicaCommand(),
		newPointsCommand(),
		newVerifyCommand(),
		newExportCommand(),
		newFailoverCommand(),
		newFailbackCommand(),
		// disks, hosts and the lab
		newDiskCommand(),
		newLabCommand(),
		newHypervCommand(),
		// certificates and the payload codec
		newPKICommand(),
		newCodecCommand(),
	)
	return root
}

// exitInterrupted is the exit code after SIGINT or SIGTERM (128 + SIGINT, as shells report it).
const exitInterrupted = 130

// interrupted is the error of a command stopped by SIGINT or SIGTERM while
// waiting: what was going on goes on, and hint says how to find it again.
func interrupted(hint string) error {
	return withExitCode(exitInterrupted, fmt.Errorf("interrupted; %s", hint))
}

// execute runs the command line args with ctx cancelled on SIGINT or
// SIGTERM, prints the error, and returns the process's exit code.
func execute(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal lets the command stop cleanly (remove a temporary
	// file, say how to reattach); a second one ends the process at once.
	context.AfterFunc(ctx, stop)
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if err.Error() != "" {
		fmt.Fprintln(stderr, "starter:", err)
	}
	return code
}

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}
