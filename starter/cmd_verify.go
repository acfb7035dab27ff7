package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/bytesize"
)

func newVerifyCommand() *cobra.Command {
	var point string
	cmd := &cobra.Command{
		Use:   "verify JOB VM [--point ID]",
		Short: "Re-read a restore point and check every block against its recorded digest",
		Long: "Re-read every block of the replica of VM (a name or an id) in JOB at a restore\n" +
			"point (default: the newest) and compare it with the digest recorded when it was\n" +
			"written. Prints the report (--output json: as JSON); exits 0 only if every block matches, else\n" +
			"names the first bad block (disk, index, byte offset).",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := outputFormat(cmd, outputText); err != nil {
				return err
			}
			r, err := replicaFromArgs(cmd, args[0], args[1])
			if err != nil {
				return err
			}
			rep, verr := r.Verify(cmd.Context(), point)
			if rep.Point != "" {
				err := emit(cmd, outputText, rep, func(w io.Writer) error {
					verdict := "every block matches its digest"
					if !rep.OK {
						verdict = "MISMATCH"
					}
					fmt.Fprintf(w, "restore point %s of %s in job %s: %s\n", rep.Point, rep.VMID, rep.Job, verdict)
					t := newTable(w, "DISK", "BLOCKS", "READ", "MISMATCHES", "FIRST BAD BLOCK", "ERROR")
					for _, d := range rep.Disks {
						bad := ""
						if d.FirstBad != nil {
							bad = fmt.Sprintf("%d at byte %d", d.FirstBad.Index, d.FirstBad.Offset)
						}
						t.row(d.ID, fmt.Sprint(d.Blocks), bytesize.Text(d.BytesRead), fmt.Sprint(d.Mismatches), bad, d.Error)
					}
					return t.flush()
				})
				if err != nil {
					return err
				}
			}
			if verr != nil {
				return withExitCode(1, verr)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&point, "point", "", "restore point id (default: the newest)")
	return cmd
}
