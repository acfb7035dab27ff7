package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/bytesize"
	"github.com/replicator/replicator/internal/replica"
)

func newExportCommand() *cobra.Command {
	var point, out, format string
	cmd := &cobra.Command{
		Use:   "export JOB VM [--point ID] --out FILE [--format raw|vhdx]",
		Short: "Write the replica's disks at a restore point as standalone disks",
		Long: "Write every disk of the replica of VM (a name or an id) in JOB at a restore\n" +
			"point (default: the newest) as a standalone raw or dynamic VHDX disk. FILE names\n" +
			"the first disk; further disks get -1, -2 … before the extension. The format\n" +
			"defaults to vhdx when FILE ends in .vhdx, else raw. Existing files are never\n" +
			"overwritten. Each disk is written to a temporary file beside FILE, flushed to\n" +
			"disk and renamed at the end: an interrupted export (Ctrl-C, an error) leaves\n" +
			"no file behind. Prints what was written (--output json: as JSON).",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return exportReplica(cmd, args[0], args[1], point, out, format)
		},
	}
	cmd.Flags().StringVar(&point, "point", "", "restore point id (default: the newest)")
	cmd.Flags().StringVar(&out, "out", "", "file of the first disk (required)")
	cmd.Flags().StringVar(&format, "format", "", "raw or vhdx (default: from the extension of --out, else raw)")
	return cmd
}

func exportReplica(cmd *cobra.Command, job, vm, point, out, format string) error {
	if out == "" {
		return errors.New("export: --out FILE is required")
	}
	if format == "" {
		format = replica.FormatRaw
		if strings.EqualFold(filepath.Ext(out), ".vhdx") {
			format = replica.FormatVHDX
		}
	}
	if format != replica.FormatRaw && format != replica.FormatVHDX {
		return fmt.Errorf("export: --format %q: raw or vhdx", format)
	}
	if _, err := outputFormat(cmd, outputText); err != nil {
		return err
	}
	r, err := replicaFromArgs(cmd, job, vm)
	if err != nil {
		return err
	}
	pts, err := r.Points()
	if err != nil {
		return err
	}
	p, err := pickPoint(pts, point)
	if err != nil {
		return fmt.Errorf("export %s %s: %w", job, vm, err)
	}
	written, err := exportDisks(cmd, r, p, out, format)
	if err != nil {
		if cmd.Context().Err() != nil {
			return interrupted("nothing was written to " + out)
		}
		return err
	}
	return emit(cmd, outputText, written, func(w io.Writer) error {
		t := newTable(w, "DISK", "FILE", "FORMAT", "VIRTUAL SIZE", "POINT")
		for _, d := range written {
			t.row(d.Disk, d.File, d.Format, bytesize.Text(d.VirtualSize), d.Point)
		}
		return t.flush()
	})
}

// exportedDisk is one file export wrote.
type exportedDisk struct {
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

// exportDisks writes every disk of p. Each disk goes through a temporary
// file that Materialize fsyncs and renames, and removes when it stops early
// (an error, or the command's context cancelled by Ctrl-C); on any failure
// this also removes the disks already written, so that a half export is
// never mistaken for a whole one and a retry starts clean.
func exportDisks(cmd *cobra.Command, r *replica.Replica, p replica.Point, out, format string) ([]exportedDisk, error) {
	var plan []exportedDisk
	for i, d := range p.Disks {
		f := diskFileName(out, i)
		if _, err := os.Lstat(f); err == nil {
			return nil, fmt.Errorf("export: %s exists; remove it or choose another --out", f)
		}
		plan = append(plan, exportedDisk{Disk: d.ID, File: f, Format: format, VirtualSize: d.VirtualSize, Point: p.ID})
	}
	for i, fd := range plan {
		if err := r.Materialize(cmd.Context(), p.ID, fd.Disk, fd.File, format); err != nil {
			for _, done := range plan[:i] {
				os.Remove(done.File)
			}
			return nil, fmt.Errorf("export: %w", err)
		}
	}
	return plan, nil
}
