package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/replica/replicatest"
)

// commitPoint writes one complete restore point of a one-disk VM whose
// source froze its data at frozen.
func commitPoint(t *testing.T, st *replica.Store, job, vmID, vmName string, frozen time.Time) {
	t.Helper()
	vm := replica.VMInfo{ID: vmID, Name: vmName, Generation: 2, Disks: []replica.DiskInfo{{ID: "boot", Size: 1 << 20, SectorSize: 512}}}
	w := replicatest.Lock(t, st, job, "test", vm)
	defer w.Close()
	spec := replica.SessionSpec{CheckpointID: "ck-" + vmID, ChangeTracking: "full", BlockSize: 64 << 10, CheckpointTime: frozen}
	replicatest.CommitPoint(t, w, spec, vm.Disks, func(_ int, _ replica.DiskInfo, dw *replica.DiskWriter) error {
		_, err := dw.WriteAt(bytes.Repeat([]byte{7}, 64<<10), 0)
		return err
	})
}

// The recovery point lag of each replica is the age of its newest point's
// checkpoint; a job's rpo flags the replicas past it, in JSON and in the table.
func TestReplicaListLag(t *testing.T) {
	dir := t.TempDir()
	datastore := filepath.Join(dir, "replicas")
	cfg := filepath.Join(dir, "replicator.yaml")
	yaml := "temporal: {address: 127.0.0.1:7233}\n" +
		"hosts: [{name: hv01, provider: lab, path: " + filepath.Join(dir, "lab") + "}]\n" +
		"targets: [{name: dr01, address: 127.0.0.1:7300}]\n" +
		"agent: {name: dr01, listen: 127.0.0.1:7300, datastore: " + datastore + "}\n" +
		"jobs:\n" +
		"  - {name: fast, source: hv01, target: dr01, rpo: 30s}\n" +
		"  - {name: nightly, source: hv01, target: dr01}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := replica.Open(datastore)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	commitPoint(t, st, "fast", "vm-late", "late01", now.Add(-2*time.Minute))
	commitPoint(t, st, "fast", "vm-fresh", "fresh01", now.Add(-5*time.Second))
	commitPoint(t, st, "nightly", "vm-old", "old01", now.Add(-3*time.Hour))

	out, err := runStarter(t, "replica", "ls", "--output", "json", "--config", cfg)
	if err != nil {
		t.Fatalf("replica ls --output json: %v\n%s", err, out)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("replica ls --output json is not JSON: %v\n%s", err, out)
	}
	byVM := map[string]map[string]any{}
	for _, r := range rows {
		byVM[r["vm"].(string)] = r
	}
	for _, c := range []struct {
		vm          string
		lag         float64 // seconds, at least
		rpo         any
		rpoExceeded bool
	}{
		{"late01", 120, 30.0, true},
		{"fresh01", 5, 30.0, false},
		{"old01", 3 * 3600, nil, false}, // no rpo, nothing to exceed
	} {
		r, ok := byVM[c.vm]
		if !ok {
			t.Fatalf("replica ls lists no %s:\n%s", c.vm, out)
		}
		lag, _ := r["lagSeconds"].(float64)
		// the listing runs after now: the lag is at least the age at now,
		// and this test takes far less than a minute
		if lag < c.lag || lag > c.lag+60 {
			t.Errorf("%s: lagSeconds %v, want %v (+ the test's own run time)", c.vm, r["lagSeconds"], c.lag)
		}
		if r["rpoSeconds"] != c.rpo {
			t.Errorf("%s: rpoSeconds %v, want %v", c.vm, r["rpoSeconds"], c.rpo)
		}
		if r["rpoExceeded"] != c.rpoExceeded {
			t.Errorf("%s: rpoExceeded %v, want %v", c.vm, r["rpoExceeded"], c.rpoExceeded)
		}
		if pt, _ := r["newestPointTime"].(string); pt == "" {
			t.Errorf("%s: no newestPointTime", c.vm)
		}
	}

	text, err := runStarter(t, "replica", "ls", "--config", cfg)
	if err != nil {
		t.Fatalf("replica ls: %v\n%s", err, text)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^JOB\s+VM\s+STATE\s+SINCE\s+NEWEST POINT\s+LAG\s+RPO\s+REPLICA VM\s*$`),
		regexp.MustCompile(`(?m)^fast\s+late01\s+ready\s+.*\s2m\d+s PAST RPO\s+30s\s`),
		regexp.MustCompile(`(?m)^fast\s+fresh01\s+ready\s+.*\s\d+(\.\d)?s\s+30s\s`),
		regexp.MustCompile(`(?m)^nightly\s+old01\s+ready\s+.*\s3h0m0s\s+-\s`),
	} {
		if !want.MatchString(text) {
			t.Errorf("replica ls table does not match %s:\n%s", want, text)
		}
	}
	if strings.Contains(text, "fresh01") && regexp.MustCompile(`fresh01.*PAST RPO`).MatchString(text) {
		t.Errorf("a replica within its rpo is flagged:\n%s", text)
	}
}

// Every command that prints takes --output text|json and --json: JSON that
// parses for scripts, text that is not JSON for people, each command's
// default kept (points prints JSON unless asked otherwise, as it always has).
func TestOutputFormats(t *testing.T) {
	dataDir := t.TempDir()
	makeReplica(t, dataDir)
	if out, err := runStarter(t, "lab", "create", "app01", "--disk", "2MiB", "--data-dir", dataDir); err != nil {
		t.Fatalf("lab create: %v\n%s", err, out)
	}
	vms := labList(t, dataDir)
	if len(vms) != 1 {
		t.Fatalf("lab ls: %+v", vms)
	}
	out := filepath.Join(t.TempDir(), "out")
	os.MkdirAll(out, 0o755)
	n := 0
	exportTo := func() string { n++; return filepath.Join(out, "web01-"+string(rune('a'+n))+".img") }

	for _, c := range []struct {
		name        string
		args        func() []string
		defaultJSON bool
		text        *regexp.Regexp // in the text form
	}{
		{"points", func() []string { return []string{"points", "demo", "web01"} }, true, regexp.MustCompile(`(?m)^ID\s+TIME\s+SIZE\s+DISKS\s+CHANGE TRACKING\n\S+-0001\s.*\s2\s+full\n`)},
		{"verify", func() []string { return []string{"verify", "demo", "web01"} }, false, regexp.MustCompile(`every block matches its digest\nDISK\s+BLOCKS.*\nboot\s+32\s`)},
		{"replica ls", func() []string { return []string{"replica", "ls"} }, false, regexp.MustCompile(`(?m)^demo\s+web01\s+ready\s`)},
		{"lab ls", func() []string { return []string{"lab", "ls"} }, false, regexp.MustCompile(`(?m)^app01\t` + vms[0].ID + `\n  disk 0\t2097152 bytes\t`)},
		{"disk info", func() []string { return []string{"disk", "info", vms[0].Disks[0].Path} }, false, regexp.MustCompile(`(?m)^format:\s+vhdx\nvirtual size:\s+2.0 MiB`)},
		{"export", func() []string { return []string{"export", "demo", "web01", "--out", exportTo()} }, false, regexp.MustCompile(`(?m)^DISK\s+FILE\s+FORMAT\s+VIRTUAL SIZE\s+POINT\nboot\s+\S+\s+raw\s+2.0 MiB\s`)},
	} {
		t.Run(c.name, func(t *testing.T) {
			run := func(extra ...string) string {
				t.Helper()
				args := append(c.args(), append(extra, "--data-dir", dataDir)...)
				o, err := runStarter(t, args...)
				if err != nil {
					t.Fatalf("starter %s: %v\n%s", strings.Join(args, " "), err, o)
				}
				return o
			}
			asJSON, alias, text, def := run("--output", "json"), run("--json"), run("--output", "text"), run()
			if !json.Valid([]byte(asJSON)) {
				t.Errorf("--output json is not JSON:\n%s", asJSON)
			}
			// export writes a new file each time, replica ls measures a lag
			// that grows: their JSON differs from one call to the next.
			if changes := c.name == "export" || c.name == "replica ls"; (changes && !json.Valid([]byte(alias))) || (!changes && alias != asJSON) {
				t.Errorf("--json printed\n%s\n--output json\n%s", alias, asJSON)
			}
			if json.Valid([]byte(text)) {
				t.Errorf("--output text printed JSON:\n%s", text)
			}
			if !c.text.MatchString(text) {
				t.Errorf("--output text does not match %s:\n%s", c.text, text)
			}
			if got := json.Valid([]byte(def)); got != c.defaultJSON {
				t.Errorf("with no --output, JSON is %v, want %v:\n%s", got, c.defaultJSON, def)
			}
		})
	}

	for _, bad := range [][]string{
		{"points", "demo", "web01", "--output", "yaml"},
		{"points", "demo", "web01", "--json", "--output", "text"},
		{"export", "demo", "web01", "--out", filepath.Join(out, "never.img"), "--output", "xml"},
	} {
		o, err := runStarter(t, append(bad, "--data-dir", dataDir)...)
		if err == nil || !strings.Contains(err.Error(), "--output") || o != "" {
			t.Errorf("starter %s: %v, printed %q; want an error naming --output and nothing printed", strings.Join(bad, " "), err, o)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "never.img")); err == nil {
		t.Errorf("export with a bad --output wrote its file")
	}
}
