package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/replica"
)

func init() { commands = append(commands, newFailoverCommand) }

func newFailoverCommand() *cobra.Command {
	var point, out, format string
	cmd := &cobra.Command{
		Use:   "failover JOB VM [--point ID] --out FILE [--format raw|vhdx]",
		Short: "Write the replica's disks at a restore point as standalone disks to boot from",
		Long: "Write every disk of the replica of VM (a name or an id) in JOB at a restore\n" +
			"point (default: the newest) as a standalone raw or dynamic VHDX disk. FILE names\n" +
			"the first disk; further disks get -1, -2 … before the extension. The format\n" +
			"defaults to vhdx when FILE ends in .vhdx, else raw. Existing files are never\n" +
			"overwritten. Prints what was written as JSON.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("failover: --out FILE is required")
			}
			if format == "" {
				format = replica.FormatRaw
				if strings.EqualFold(filepath.Ext(out), ".vhdx") {
					format = replica.FormatVHDX
				}
			}
			if format != replica.FormatRaw && format != replica.FormatVHDX {
				return fmt.Errorf("failover: --format %q: raw or vhdx", format)
			}
			r, err := replicaFromArgs(cmd, args[0], args[1])
			if err != nil {
				return err
			}
			pts, err := r.Points()
			if err != nil {
				return err
			}
			p, err := pickPoint(pts, point)
			if err != nil {
				return fmt.Errorf("failover %s %s: %w", args[0], args[1], err)
			}
			written, err := failoverDisks(cmd, r, p, out, format)
			if err != nil {
				return err
			}
			return printJSON(cmd, written)
		},
	}
	cmd.Flags().StringVar(&point, "point", "", "restore point id (default: the newest)")
	cmd.Flags().StringVar(&out, "out", "", "file of the first disk (required)")
	cmd.Flags().StringVar(&format, "format", "", "raw or vhdx (default: from the extension of --out, else raw)")
	return cmd
}

// failoverDisk is one file failover wrote.
type failoverDisk struct {
	Disk        string `json:"disk"`
	File        string `json:"file"`
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtualSize"`
	Point       string `json:"point"`
}

func pickPoint(pts []replica.Point, id string) (replica.Point, error) {
	if len(pts) == 0 {
		return replica.Point{}, errors.New("the replica has no complete restore point")
	}
	if id == "" {
		return pts[len(pts)-1], nil
	}
	for _, p := range pts {
		if p.ID == id {
			return p, nil
		}
	}
	ids := make([]string, len(pts))
	for i, p := range pts {
		ids[i] = p.ID
	}
	return replica.Point{}, fmt.Errorf("no restore point %q (points: %s)", id, strings.Join(ids, ", "))
}

// diskFileName names the file of disk i: FILE for the first, FILE-i.ext after.
func diskFileName(out string, i int) string {
	if i == 0 {
		return out
	}
	ext := filepath.Ext(out)
	return fmt.Sprintf("%s-%d%s", strings.TrimSuffix(out, ext), i, ext)
}

// failoverDisks writes every disk of p; on failure it removes what this call
// wrote, so that a retry starts clean.
func failoverDisks(cmd *cobra.Command, r *replica.Replica, p replica.Point, out, format string) ([]failoverDisk, error) {
	var plan []failoverDisk
	for i, d := range p.Disks {
		f := diskFileName(out, i)
		if _, err := os.Lstat(f); err == nil {
			return nil, fmt.Errorf("failover: %s exists; remove it or choose another --out", f)
		}
		plan = append(plan, failoverDisk{Disk: d.ID, File: f, Format: format, VirtualSize: d.VirtualSize, Point: p.ID})
	}
	for i, fd := range plan {
		if err := r.Materialize(cmd.Context(), p.ID, fd.Disk, fd.File, format); err != nil {
			for _, done := range plan[:i] {
				os.Remove(done.File)
			}
			return nil, fmt.Errorf("failover: %w", err)
		}
	}
	return plan, nil
}
