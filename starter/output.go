package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/bytesize"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/replica"
)

// Output formats of the commands that print: text is for people (tables,
// sentences), json for scripts.
const (
	outputText = "text"
	outputJSON = "json"
)

// addOutputFlags gives every command --output text|json and its alias --json.
// The default is per command: json where scripts have read JSON since the
// first release (status, points, run --wait), text everywhere else.
func addOutputFlags(root *cobra.Command) {
	root.PersistentFlags().String("output", "", "text (for people) or json (for scripts); default json for status, points and run --wait, text otherwise")
	root.PersistentFlags().Bool("json", false, "alias of --output json")
}

// outputFormat is the format asked for on the command line, or def.
func outputFormat(cmd *cobra.Command, def string) (string, error) {
	format := def
	asJSON := false
	if f := cmd.Flag("json"); f != nil && f.Changed {
		asJSON = f.Value.String() == "true"
		if asJSON {
			format = outputJSON
		}
	}
	if f := cmd.Flag("output"); f != nil && f.Changed {
		switch v := f.Value.String(); v {
		case outputText, outputJSON:
			if asJSON && v != outputJSON {
				return "", fmt.Errorf("--json and --output %s disagree", v)
			}
			format = v
		default:
			return "", fmt.Errorf("--output %q: text or json", v)
		}
	}
	return format, nil
}

// emit prints v in the format asked for (def when none was): as indented
// JSON, or through text.
func emit(cmd *cobra.Command, def string, v any, text func(w io.Writer) error) error {
	format, err := outputFormat(cmd, def)
	if err != nil {
		return err
	}
	if format == outputJSON {
		return printJSON(cmd, v)
	}
	return text(cmd.OutOrStdout())
}

// printJSON writes v as indented JSON, the form scripts read.
func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns: the header, then one row per call of row.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// orDash stands for an empty cell.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// localTime prints a time for people, in the local zone; "-" when unset.
func localTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// writeRunResult prints a run's result or progress: a line for the job,
// then a row per VM and its disks.
func writeRunResult(w io.Writer, res contract.ReplicationResult) error {
	status := res.Status
	if status == "" {
		status = "running"
	}
	fmt.Fprintf(w, "job %s: %s (run %s)\n", orDash(res.Job), status, orDash(res.RunID))
	if len(res.VMs) == 0 {
		return nil
	}
	t := newTable(w, "VM", "STATUS", "RESTORE POINT", "DISKS", "READ", "SENT", "ERROR")
	for _, vm := range res.VMs {
		var read, sent int64
		for _, d := range vm.Disks {
			read += d.BytesRead
			sent += d.BytesSent
		}
		t.row(vm.Name, vm.Status, vm.RestorePoint, fmt.Sprint(len(vm.Disks)), bytesize.Text(read), bytesize.Text(sent), vm.Error)
	}
	return t.flush()
}

// writePoints prints restore points, oldest first.
func writePoints(w io.Writer, pts []replica.Point) error {
	if len(pts) == 0 {
		_, err := fmt.Fprintln(w, "no complete restore point")
		return err
	}
	t := newTable(w, "ID", "TIME", "SIZE", "DISKS", "CHANGE TRACKING")
	for _, p := range pts {
		t.row(p.ID, localTime(p.Time), bytesize.Text(p.Size), fmt.Sprint(len(p.Disks)), p.ChangeTracking)
	}
	return t.flush()
}

// writeReplicaOp prints the state a lifecycle operation left a replica in.
func writeReplicaOp(w io.Writer, r contract.ReplicaOpResult) error {
	fmt.Fprintf(w, "replica of %s (%s) in job %s: %s\n", orDash(r.VM), orDash(r.VMID), orDash(r.Job), orDash(r.State))
	if r.Point != "" {
		fmt.Fprintf(w, "  point       %s\n", r.Point)
	}
	if r.ReplicaVM != "" {
		fmt.Fprintf(w, "  replica VM  %s on %s (%s)\n", r.ReplicaVM, orDash(r.Host), orDash(r.VMState))
	}
	for _, d := range r.Disks {
		fmt.Fprintf(w, "  disk        %s\n", d)
	}
	return nil
}

// writePlanResult prints what a failover plan did to each VM.
func writePlanResult(w io.Writer, res contract.FailoverPlanResult) error {
	fmt.Fprintf(w, "failover plan %s: %s\n", res.Plan, res.Status)
	t := newTable(w, "JOB", "VM", "STATUS", "STARTED", "STATE", "ERROR")
	for _, vm := range res.VMs {
		t.row(vm.Job, vm.VM, vm.Status, localTime(vm.Started), vm.Replica.State, vm.Error)
	}
	return t.flush()
}
