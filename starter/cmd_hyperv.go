package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/provider/hyperv"
	"github.com/replicator/replicator/internal/provider/hyperv/hvsim"
)

func newHypervCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "hyperv", Short: "Work with Hyper-V hosts"}
	cmd.AddCommand(newHypervCaptureCommand())
	return cmd
}

func newHypervCaptureCommand() *cobra.Command {
	var hostName, vm, out string
	cmd := &cobra.Command{
		Use:   "capture --host NAME --vm VM --out FILE",
		Short: "Record the WMI answers the Hyper-V provider relies on, in the tests' fixture format",
		Long: "Records, for one VM of a Hyper-V host of the configuration, what the provider reads\n" +
			"and what the host answers: the VMs with their settings and storage allocations, a\n" +
			"recovery checkpoint, a reference point, the changed ranges of each disk against it,\n" +
			"and a call that fails. The checkpoint and reference point it makes (named\n" +
			"\"replicator capture <vm>\") are removed again. Needs Windows for provider hyperv;\n" +
			"provider hyperv-sim records the simulator.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if hostName == "" || vm == "" || out == "" {
				return errors.New("hyperv capture: --host, --vm and --out are required")
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			h, ok := cfg.Host(hostName)
			if !ok {
				return fmt.Errorf("hyperv capture: no host %q in the configuration", hostName)
			}
			var c hyperv.WMI
			switch h.Provider {
			case "hyperv":
				c, err = hyperv.Connect(cmd.Context(), *h)
			case "hyperv-sim":
				c, err = hvsim.Open(h.Name, h.Path, hvsim.Options{JobDelay: h.Simulator.JobDelay, JobWarnings: h.Simulator.JobWarnings})
			default:
				return fmt.Errorf("hyperv capture: host %s has provider %s, not hyperv or hyperv-sim", h.Name, h.Provider)
			}
			if err != nil {
				return fmt.Errorf("hyperv capture: %w", err)
			}
			defer c.Close()
			rec, err := hyperv.Capture(cmd.Context(), c, vm, hyperv.Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				return err
			}
			b, err := json.MarshalIndent(rec, "", " ")
			if err != nil {
				return err
			}
			if err := atomicfile.WriteFile(out, append(b, '\n'), 0o644); err != nil {
				return fmt.Errorf("hyperv capture: %w", err)
			}
			type recorded struct {
				File        string   `json:"file"`
				Host        string   `json:"host"`
				VM          string   `json:"vm"`
				Queries     int      `json:"queries"`
				Objects     int      `json:"objects"`
				Invocations int      `json:"invocations"`
				Errors      []string `json:"errors"`
			}
			res := recorded{File: out, Host: rec.Host, VM: vm, Queries: len(rec.Queries), Objects: len(rec.Objects),
				Invocations: len(rec.Invocations), Errors: []string{}}
			res.Errors = append(res.Errors, rec.Errors...)
			return emit(cmd, outputText, res, func(w io.Writer) error {
				fmt.Fprintf(w, "recorded %d queries, %d objects and %d method calls of host %s (VM %s) into %s\n",
					res.Queries, res.Objects, res.Invocations, res.Host, vm, out)
				for _, e := range res.Errors {
					fmt.Fprintf(w, "  %s\n", e)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&hostName, "host", "", "host of the configuration (provider hyperv or hyperv-sim)")
	cmd.Flags().StringVar(&vm, "vm", "", "VM name or id")
	cmd.Flags().StringVar(&out, "out", "", "file to write the recording to (JSON)")
	return cmd
}
