package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// clearEnv removes REPLICATOR_* variables of the surrounding environment for
// the duration of a test, so that only what the test sets counts.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix+"_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "replicator.yaml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func loadText(t *testing.T, text string) (*Config, error) {
	t.Helper()
	return Load(LoadOptions{File: writeConfig(t, text)})
}

func mustLoad(t *testing.T, text string) *Config {
	t.Helper()
	cfg, err := loadText(t, text)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

// header is a valid configuration without jobs.
const header = `
temporal: {address: "temporal.example:7233"}
hosts:
  - {name: hv01, provider: lab, path: /srv/lab}
  - {name: hv02, provider: hyperv, path: "."}
targets:
  - {name: dr01, address: "dr01.example:7300"}
`

// withJob is header plus one job named j1 from hv01 to dr01, with more keys.
func withJob(keys string) string {
	s := header + "jobs:\n  - name: j1\n    source: hv01\n    target: dr01\n"
	for _, line := range strings.Split(strings.Trim(keys, "\n"), "\n") {
		if line != "" {
			s += "    " + line + "\n"
		}
	}
	return s
}

func TestLoadValidConfig(t *testing.T) {
	clearEnv(t)
	cfg := mustLoad(t, `
temporal:
  address: temporal.example:7233
  namespace: prod
  taskQueue: repl
  tls: {ca: /pki/t-ca.pem}
hosts:
  - name: hv01
    provider: hyperv
    path: hv01.example
    username: 'CORP\backup'
    passwordFile: /secrets/hv01
targets:
  - name: dr01
    address: 10.0.0.5:7300
agent:
  name: dr01
  listen: ":7300"
  datastore: /srv/replicas
tls: {ca: /pki/ca.pem, cert: /pki/node.pem, key: /pki/node-key.pem}
metrics: {listen: "0.0.0.0:9100"}
jobs:
  - name: nightly
    source: hv01
    target: dr01
    vms: [web01, "5A1C-77"]
    window: 1h30m
    compression: high
    blockSize: 512KiB
    changeTracking: rct
    exclude: {zeroBlocks: false, swap: true, paths: ["/tmp/*"]}
    retention: 14
    parallelism: 2
    guestProcessing:
      enabled: true
      onFailure: continue
      timeout: 5m
      preFreeze: ["sync"]
      postThaw: ["true"]
      ssh: {user: backup, keyFile: /k, knownHosts: /kh}
      guests: {Web01: "10.0.0.21:22"}
`)
	want := &Config{
		Temporal: Temporal{Address: "temporal.example:7233", Namespace: "prod", TaskQueue: "repl", TLS: TemporalTLS{CA: "/pki/t-ca.pem"}},
		Hosts:    []Host{{Name: "hv01", Provider: "hyperv", Path: "hv01.example", Username: `CORP\backup`, PasswordFile: "/secrets/hv01"}},
		Targets:  []Target{{Name: "dr01", Address: "10.0.0.5:7300"}},
		Agent:    Agent{Name: "dr01", Listen: ":7300", Datastore: "/srv/replicas"},
		TLS:      TLS{CA: "/pki/ca.pem", Cert: "/pki/node.pem", Key: "/pki/node-key.pem"},
		Metrics:  Metrics{Listen: "0.0.0.0:9100"},
		Jobs: []Job{{
			Name: "nightly", Source: "hv01", Target: "dr01",
			VMs:            []string{"web01", "5A1C-77"},
			Window:         90 * time.Minute,
			Compression:    "high",
			BlockSize:      512 * KiB,
			ChangeTracking: "rct",
			Exclude:        Exclude{ZeroBlocks: false, Swap: true, Paths: []string{"/tmp/*"}},
			Retention:      14,
			Parallelism:    2,
			Overlap:        "skip",
			Timezone:       "UTC",
			Retries:        3,
			RetryWait:      10 * time.Minute,
			GuestProcessing: GuestProcessing{
				Enabled: true, OnFailure: "continue", Timeout: 5 * time.Minute,
				PreFreeze: []string{"sync"}, PostThaw: []string{"true"},
				SSH:    SSH{User: "backup", KeyFile: "/k", KnownHosts: "/kh"},
				Guests: map[string]string{"Web01": "10.0.0.21:22"},
				Method: "ssh",
			},
			Consistency:     "application",
			GuestBackupType: "copy",
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("loaded\n%+v\nwant\n%+v", cfg, want)
	}
	if j, ok := cfg.Job("nightly"); !ok || j.Retention != 14 {
		t.Errorf("Job(nightly) = %v, %v", j, ok)
	}
	if _, ok := cfg.Job("demo"); ok {
		t.Error("Job(demo) found in a config without it")
	}
	if h, ok := cfg.Host("hv01"); !ok || h.Provider != "hyperv" {
		t.Errorf("Host(hv01) = %v, %v", h, ok)
	}
	if tg, ok := cfg.Target("dr01"); !ok || tg.Address != "10.0.0.5:7300" {
		t.Errorf("Target(dr01) = %v, %v", tg, ok)
	}
}

func TestDefaultsFillMissingKeys(t *testing.T) {
	clearEnv(t)
	cfg := mustLoad(t, withJob(""))
	if cfg.Temporal.Namespace != "default" || cfg.Temporal.TaskQueue != "replication" {
		t.Errorf("temporal = %+v, want namespace default, taskQueue replication", cfg.Temporal)
	}
	want := DefaultJob()
	want.Name, want.Source, want.Target = "j1", "hv01", "dr01"
	if !reflect.DeepEqual(cfg.Jobs[0], want) {
		t.Fatalf("job\n%+v\nwant\n%+v", cfg.Jobs[0], want)
	}
	j := cfg.Jobs[0]
	if !reflect.DeepEqual(j.VMs, []string{"*"}) || j.Compression != "optimal" || j.BlockSize != MiB ||
		j.ChangeTracking != "auto" || !j.Exclude.ZeroBlocks || !j.Exclude.Swap || j.Retention != 7 ||
		j.Parallelism != 4 || j.GuestProcessing.OnFailure != "fail" || j.GuestProcessing.Timeout != 10*time.Minute ||
		j.Window != 0 || j.GuestProcessing.Enabled {
		t.Errorf("defaults not as documented: %+v", j)
	}
	if cfg.Metrics.Listen != "" || cfg.Agent.Name != "" || cfg.TLS != (TLS{}) {
		t.Errorf("file without metrics/agent/tls got %+v %+v %+v", cfg.Metrics, cfg.Agent, cfg.TLS)
	}
}

func TestExplicitValuesBeatDefaults(t *testing.T) {
	clearEnv(t)
	// false and a partial exclude keep the other defaults of the section.
	cfg := mustLoad(t, withJob("exclude: {swap: false}\nguestProcessing: {onFailure: continue}"))
	j := cfg.Jobs[0]
	if j.Exclude.Swap || !j.Exclude.ZeroBlocks {
		t.Errorf("exclude = %+v, want swap false, zeroBlocks true", j.Exclude)
	}
	if j.GuestProcessing.OnFailure != "continue" || j.GuestProcessing.Timeout != 10*time.Minute {
		t.Errorf("guestProcessing = %+v", j.GuestProcessing)
	}
	// A null value keeps the default.
	cfg = mustLoad(t, withJob("vms:\nretention: ~"))
	if !reflect.DeepEqual(cfg.Jobs[0].VMs, []string{"*"}) || cfg.Jobs[0].Retention != 7 {
		t.Errorf("null values: vms %v retention %d, want defaults", cfg.Jobs[0].VMs, cfg.Jobs[0].Retention)
	}
}

func TestMergeKeysShareJobSettings(t *testing.T) {
	clearEnv(t)
	cfg := mustLoad(t, header+`
jobs:
  - &base
    name: a
    source: hv01
    target: dr01
    compression: fast
    retention: 3
  - <<: *base
    name: b
    retention: 5
`)
	if len(cfg.Jobs) != 2 || cfg.Jobs[1].Name != "b" || cfg.Jobs[1].Compression != "fast" || cfg.Jobs[1].Retention != 5 || cfg.Jobs[0].Retention != 3 {
		t.Fatalf("jobs = %+v", cfg.Jobs)
	}
}

func TestDev(t *testing.T) {
	clearEnv(t)
	dir := filepath.Join(t.TempDir(), "data")
	cfg := Dev(dir)
	job := DefaultJob()
	job.Name, job.Source, job.Target = "demo", "hv01", "dr01"
	want := &Config{
		Temporal: Temporal{Address: "127.0.0.1:7233", Namespace: "default", TaskQueue: "replication"},
		Hosts:    []Host{{Name: "hv01", Provider: "lab", Path: filepath.Join(dir, "lab")}},
		Targets:  []Target{{Name: "dr01", Address: "127.0.0.1:7300"}},
		Agent: Agent{Name: "dr01", Listen: "127.0.0.1:7300", Datastore: filepath.Join(dir, "replicas"),
			Host: Host{Name: "dr01", Provider: "lab", Path: filepath.Join(dir, "lab-dr")}},
		TLS: TLS{
			CA:   filepath.Join(dir, "pki", "ca.pem"),
			Cert: filepath.Join(dir, "pki", "node.pem"),
			Key:  filepath.Join(dir, "pki", "node-key.pem"),
		},
		Metrics: Metrics{Listen: "127.0.0.1:9090"},
		Jobs:    []Job{job},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("Dev\n%+v\nwant\n%+v", cfg, want)
	}
	if cfg.Jobs[0].Window != 0 || cfg.Jobs[0].BlockSize != MiB || cfg.Jobs[0].GuestProcessing.Enabled {
		t.Errorf("demo job %+v", cfg.Jobs[0])
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Dev does not validate: %v", err)
	}
	loaded, err := Load(LoadOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(loaded, want) {
		t.Errorf("Load without a file = %+v, want Dev", loaded)
	}
	if def, err := Load(LoadOptions{}); err != nil || def.Agent.Datastore != filepath.Join(".replicator", "replicas") {
		t.Errorf("Load{} = %+v, %v; want datastore under .replicator", def, err)
	}
	// Dev's configuration written as YAML loads back the same.
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	back := mustLoad(t, string(data))
	if !reflect.DeepEqual(back, cfg) {
		t.Errorf("Dev through YAML\n%s\nloads as %+v", data, back)
	}
}

func TestExampleLoads(t *testing.T) {
	clearEnv(t)
	cfg, err := Load(LoadOptions{File: "example.yaml"})
	if err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	if len(cfg.Hosts) != 3 || cfg.Hosts[2].Simulator.JobDelay != 30*time.Second || len(cfg.Targets) != 1 || len(cfg.Jobs) != 1 || cfg.Jobs[0].Name != "demo" {
		t.Fatalf("example.yaml loaded as %+v", cfg)
	}
	// Every key of the configuration is shown in the example.
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var walk func(t reflect.Type)
	walk = func(typ reflect.Type) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			if notAKey(f) {
				continue
			}
			if !strings.Contains(string(data), yamlKey(f)+":") {
				t.Errorf("example.yaml does not show key %q", yamlKey(f))
			}
			ft := f.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft)
			}
		}
	}
	walk(reflect.TypeOf(Config{}))
}

func TestEnvOverrides(t *testing.T) {
	clearEnv(t)
	t.Setenv("REPLICATOR_TEMPORAL_ADDRESS", "temporal.prod:7233")
	t.Setenv("REPLICATOR_TEMPORAL_TASKQUEUE", "repl-prod")
	t.Setenv("REPLICATOR_TEMPORAL_TLS_CA", "/pki/temporal-ca.pem")
	t.Setenv("REPLICATOR_AGENT_DATASTORE", "/srv/other")
	t.Setenv("REPLICATOR_TLS_CA", "/pki/other-ca.pem")
	t.Setenv("REPLICATOR_METRICS_LISTEN", "0.0.0.0:9200")
	t.Setenv("REPLICATOR_DATA_DIR", "/elsewhere") // not a config section: ignored
	check := func(name string, cfg *Config) {
		t.Helper()
		if cfg.Temporal.Address != "temporal.prod:7233" || cfg.Temporal.TaskQueue != "repl-prod" ||
			cfg.Temporal.TLS.CA != "/pki/temporal-ca.pem" || cfg.Agent.Datastore != "/srv/other" ||
			cfg.TLS.CA != "/pki/other-ca.pem" || cfg.Metrics.Listen != "0.0.0.0:9200" {
			t.Errorf("%s: overrides not applied: %+v", name, cfg)
		}
	}
	dev, err := Load(LoadOptions{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	check("dev", dev)
	if dev.Temporal.Namespace != "default" || dev.Agent.Name != "dr01" {
		t.Errorf("dev: keys without a variable changed: %+v", dev)
	}
	file, err := loadText(t, withJob("")+"agent: {name: dr01, listen: ':7300', datastore: /srv/r}\ntls: {ca: /a, cert: /b, key: /c}\n")
	if err != nil {
		t.Fatal(err)
	}
	check("file", file)

	// An empty variable sets the key empty: here it turns metrics off.
	t.Setenv("REPLICATOR_METRICS_LISTEN", "")
	dev, err = Load(LoadOptions{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if dev.Metrics.Listen != "" {
		t.Errorf("REPLICATOR_METRICS_LISTEN= left metrics.listen %q", dev.Metrics.Listen)
	}
}

func TestEnvProblems(t *testing.T) {
	clearEnv(t)
	t.Setenv("REPLICATOR_TEMPORAL_ADRESS", "x:1")
	t.Setenv("REPLICATOR_METRICS_LISTEN", "nowhere")
	t.Setenv("REPLICATOR_JOBS_0_NAME", "x")
	_, err := Load(LoadOptions{DataDir: t.TempDir()})
	assertProblems(t, err,
		"REPLICATOR_TEMPORAL_ADRESS: environment variable names no key",
		"REPLICATOR_JOBS_0_NAME: environment variable names no key",
		`metrics.listen: invalid address "nowhere"`)
}

func TestFlagOverrides(t *testing.T) {
	clearEnv(t)
	t.Setenv("REPLICATOR_TEMPORAL_ADDRESS", "from-env:7233")
	t.Setenv("REPLICATOR_AGENT_LISTEN", "from-env:7300")
	fs := pflag.NewFlagSet("workers", pflag.ContinueOnError)
	fs.String("temporal.address", "127.0.0.1:7233", "")
	fs.String("agent.listen", "127.0.0.1:7300", "")
	fs.String("metrics.listen", "127.0.0.1:9090", "")
	fs.String("temporal.taskQueue", "", "")
	fs.Bool("once", false, "") // not a key: ignored
	if err := fs.Parse([]string{"--temporal.address", "from-flag:7233", "--temporal.taskQueue=q2", "--once"}); err != nil {
		t.Fatal(err)
	}
	for _, base := range []LoadOptions{{DataDir: t.TempDir()}, {File: writeConfig(t, withJob("")+"agent: {name: dr01, listen: ':7300', datastore: /r}\n")}} {
		base.Flags = fs
		cfg, err := Load(base)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Temporal.Address != "from-flag:7233" {
			t.Errorf("file %q: temporal.address = %q, want the flag's", base.File, cfg.Temporal.Address)
		}
		if cfg.Temporal.TaskQueue != "q2" {
			t.Errorf("file %q: temporal.taskQueue = %q, want q2", base.File, cfg.Temporal.TaskQueue)
		}
		// An unchanged flag does not override: the environment's value stands,
		// and the flag's default does not switch metrics on.
		if cfg.Agent.Listen != "from-env:7300" {
			t.Errorf("file %q: agent.listen = %q, want the environment's", base.File, cfg.Agent.Listen)
		}
		if base.File != "" && cfg.Metrics.Listen != "" {
			t.Errorf("unchanged flag set metrics.listen to %q", cfg.Metrics.Listen)
		}
	}

	bad := pflag.NewFlagSet("workers", pflag.ContinueOnError)
	bad.String("metrics.listen", "", "")
	if err := bad.Parse([]string{"--metrics.listen=9090"}); err != nil {
		t.Fatal(err)
	}
	_, err := Load(LoadOptions{DataDir: t.TempDir(), Flags: bad})
	assertProblems(t, err, `metrics.listen: invalid address "9090": want host:port (from flag --metrics.listen)`)
}

func TestDurations(t *testing.T) {
	clearEnv(t)
	for text, want := range map[string]time.Duration{
		"0": 0, `"0"`: 0, "90m": 90 * time.Minute, "1h30m": 90 * time.Minute, "45s": 45 * time.Second, "2h": 2 * time.Hour,
	} {
		cfg := mustLoad(t, withJob("window: "+text+"\nguestProcessing: {timeout: "+text+"}"))
		if cfg.Jobs[0].Window != want || cfg.Jobs[0].GuestProcessing.Timeout != want {
			t.Errorf("window %s = %v / timeout %v, want %v", text, cfg.Jobs[0].Window, cfg.Jobs[0].GuestProcessing.Timeout, want)
		}
	}
}

func TestByteSizes(t *testing.T) {
	for text, want := range map[string]ByteSize{
		"1MiB": MiB, "512KiB": 512 * KiB, "4MB": 4 * MiB, "1048576": MiB, "64k": 64 * KiB, "2 GiB": 2 * GiB,
		"1mib": MiB, "4096B": 4096, "0": 0, "1TiB": TiB,
	} {
		got, err := ParseByteSize(text)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", text, got, err, want)
		}
	}
	for _, text := range []string{"", "MiB", "-1MiB", "1.5MiB", "1 parsec", "99999999999999999999", "9999999TiB"} {
		if got, err := ParseByteSize(text); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", text, got)
		}
	}
	for size, want := range map[ByteSize]string{MiB: "1MiB", 512 * KiB: "512KiB", 1000: "1000B", 0: "0B", 3 * GiB: "3GiB", MiB + KiB: "1025KiB"} {
		if got := size.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(size), got, want)
		}
		text, err := size.MarshalText()
		if err != nil || string(text) != want {
			t.Errorf("MarshalText = %q, %v", text, err)
		}
		var back ByteSize
		if err := back.UnmarshalText(text); err != nil || back != size {
			t.Errorf("UnmarshalText(%q) = %d, %v; want %d", text, back, err, size)
		}
	}
	clearEnv(t)
	for text, want := range map[string]ByteSize{"1MiB": MiB, "256KiB": 256 * KiB, "4MB": 4 * MiB, "1048576": MiB, `"64MiB"`: 64 * MiB} {
		cfg := mustLoad(t, withJob("blockSize: "+text))
		if cfg.Jobs[0].BlockSize != want {
			t.Errorf("blockSize %s = %v, want %v", text, cfg.Jobs[0].BlockSize, want)
		}
	}
}

func TestUnknownKeys(t *testing.T) {
	clearEnv(t)
	_, err := loadText(t, withJob("compresion: fast\nexclude: {zeroblock: true}")+"metric: {listen: ':1'}\n")
	assertProblems(t, err,
		`jobs[0].compresion: unknown key; did you mean "compression"?`,
		`jobs[0].exclude.zeroblock: unknown key; did you mean "zeroBlocks"?`,
		`metric: unknown key; did you mean "metrics"?`)
	if !strings.Contains(err.Error(), "(line ") {
		t.Errorf("error does not give the line: %v", err)
	}
}

func TestKeysIgnoreCaseButMapKeysKeepIt(t *testing.T) {
	clearEnv(t)
	cfg := mustLoad(t, withJob("BlockSize: 256KiB\nguestProcessing: {guests: {WEB01: 'a:22', web01: 'b:22'}}"))
	if cfg.Jobs[0].BlockSize != 256*KiB {
		t.Errorf("BlockSize = %v", cfg.Jobs[0].BlockSize)
	}
	if g := cfg.Jobs[0].GuestProcessing.Guests; g["WEB01"] != "a:22" || g["web01"] != "b:22" {
		t.Errorf("guests = %v, want both VM names with their case", g)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := Dev(t.TempDir())
	cfg.Temporal.Address = ""
	cfg.Jobs[0].Retention = 0
	cfg.Jobs[0].Compression = "zip"
	cfg.Hosts[0].Provider = "vmware"
	err := cfg.Validate()
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Validate = %v, want *ValidationError", err)
	}
	if len(verr.Problems) != 4 {
		t.Errorf("%d problems, want 4: %v", len(verr.Problems), err)
	}
	if n := strings.Count(err.Error(), "\n"); n != 4 {
		t.Errorf("error has %d problem lines, want 4:\n%v", n, err)
	}
	if err := Dev("").Validate(); err != nil {
		t.Errorf("Dev(\"\").Validate() = %v", err)
	}
}

func TestNameProblem(t *testing.T) {
	for _, ok := range []string{"demo", "web-01", "a.b_c", "X", strings.Repeat("n", 64), "..a"} {
		if p := NameProblem(ok); p != "" {
			t.Errorf("NameProblem(%q) = %q, want none", ok, p)
		}
	}
	for name, reason := range map[string]string{
		"": "required", "a/b": "path separator", `a\b`: "path separator", "..": "not a file name", ".": "not a file name",
		"/abs": "path separator", "a\x00b": "NUL", strings.Repeat("n", 65): "at most 64", "a b": "contains ' '", "é": "contains 'é'",
		"a:b": "contains ':'",
	} {
		if p := NameProblem(name); !strings.Contains(p, reason) {
			t.Errorf("NameProblem(%q) = %q, want it to say %q", name, p, reason)
		}
	}
}

func TestLoadFileErrors(t *testing.T) {
	clearEnv(t)
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	if _, err := Load(LoadOptions{File: missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v, want an error naming it", err)
	}
	file := writeConfig(t, "temporal: {address: [\n")
	if _, err := Load(LoadOptions{File: file}); err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "line") {
		t.Errorf("broken YAML: %v, want the file and the line", err)
	}
	// An empty file is all defaults, which lack the Temporal address.
	_, err := loadText(t, "")
	assertProblems(t, err, "temporal.address: required")
}

// assertProblems checks that err is a *ValidationError whose message holds
// each wanted "path: reason" text, and that it has exactly that many problems.
func assertProblems(t *testing.T, err error, want ...string) {
	t.Helper()
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("error = %v, want a *ValidationError", err)
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not say %q:\n%s", w, msg)
		}
	}
	if len(verr.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(verr.Problems), len(want), msg)
	}
}

func TestBadConfigurations(t *testing.T) {
	clearEnv(t)
	cases := []struct {
		name string
		yaml string
		want []string // "path: reason" fragments, one per expected problem
	}{
		{"no temporal address", "hosts: []\n", []string{"temporal.address: required"}},
		{"temporal address without port", strings.Replace(withJob(""), `"temporal.example:7233"`, "temporal.example", 1),
			[]string{`temporal.address: invalid address "temporal.example": want host:port`}},
		{"temporal address port out of range", strings.Replace(withJob(""), "7233", "70000", 1),
			[]string{`temporal.address: invalid address "temporal.example:70000": port must be 1 to 65535`}},
		{"temporal address without host", strings.Replace(withJob(""), `"temporal.example:7233"`, `":7233"`, 1),
			[]string{"temporal.address: invalid address \":7233\": host is missing"}},
		{"empty namespace and task queue", strings.Replace(withJob(""), `"temporal.example:7233"}`, `"temporal.example:7233", namespace: "", taskQueue: ""}`, 1),
			[]string{"temporal.namespace: required", "temporal.taskQueue: required"}},
		{"temporal mentioned twice", withJob("") + "temporal: {namespace: x}\n", []string{"temporal: duplicate key (first at line 2"}},
		{"unknown provider", strings.Replace(withJob(""), "provider: hyperv", "provider: vmware", 1),
			[]string{`hosts[1].provider: unknown provider "vmware": want one of lab, hyperv, hyperv-sim`}},
		{"hyperv-sim without path", strings.Replace(withJob(""), "provider: hyperv, path: \".\"", "provider: hyperv-sim, path: ''", 1),
			[]string{"hosts[1].path: required for provider hyperv-sim"}},
		{"simulator on a lab host", strings.Replace(withJob(""), "path: /srv/lab", "path: /srv/lab, simulator: {jobDelay: 1m}", 1),
			[]string{`hosts[0].simulator: only for provider hyperv-sim (this host's provider is "lab")`}},
		{"negative simulated job delay", strings.Replace(withJob(""), "provider: hyperv, ", "provider: hyperv-sim, simulator: {jobDelay: -1s}, ", 1),
			[]string{"hosts[1].simulator.jobDelay: negative (-1s)"}},
		{"unknown guest method", withJob("guestProcessing: {method: winrm, methods: {sql01: rdp}}"),
			[]string{`jobs[0].guestProcessing.method: unknown method "winrm"`, `jobs[0].guestProcessing.methods.sql01: unknown method "rdp"`}},
		{"powershell-direct without credentials", withJob("guestProcessing: {enabled: true, timeout: 1m, method: powershell-direct}"),
			[]string{"jobs[0].guestProcessing.powershellDirect.user: required", "jobs[0].guestProcessing.powershellDirect.passwordFile: required"}},
		{"unknown guest backup type", withJob("guestBackupType: incremental"),
			[]string{`jobs[0].guestBackupType: unknown guest backup type "incremental": want copy or full`}},
		{"unknown consistency", withJob("consistency: vss"),
			[]string{`jobs[0].consistency: unknown consistency "vss": want application or crash`}},
		{"missing provider", strings.Replace(withJob(""), "provider: hyperv, ", "", 1),
			[]string{"hosts[1].provider: required"}},
		{"lab without path", strings.Replace(withJob(""), "path: /srv/lab", "path: ''", 1),
			[]string{"hosts[0].path: required for provider lab"}},
		{"duplicate host", strings.Replace(withJob(""), "name: hv02", "name: hv01", 1),
			[]string{`hosts[1].name: duplicate name "hv01" (also hosts[0])`}},
		{"host name with slash", strings.Replace(withJob(""), "name: hv02", "name: 'a/b'", 1),
			[]string{`hosts[1].name: name "a/b" contains a path separator`}},
		{"host name dot-dot", strings.Replace(withJob(""), "name: hv02", "name: '..'", 1),
			[]string{`hosts[1].name: name ".." is not a file name`}},
		{"empty host name", strings.Replace(withJob(""), "name: hv02, ", "", 1),
			[]string{"hosts[1].name: required"}},
		{"duplicate target", strings.Replace(withJob(""), `  - {name: dr01, address: "dr01.example:7300"}`, "  - {name: dr01, address: 'a:1'}\n  - {name: dr01, address: 'b:1'}", 1),
			[]string{`targets[1].name: duplicate name "dr01" (also targets[0])`}},
		{"target stall timeout too short", strings.Replace(withJob(""), `address: "dr01.example:7300"}`, `address: "dr01.example:7300", stallTimeout: 2s}`, 1),
			[]string{"targets[0].stallTimeout: 2s: want 0 for the default (30s) or at least 5s"}},
		{"target address missing", strings.Replace(withJob(""), `, address: "dr01.example:7300"`, "", 1),
			[]string{"targets[0].address: required: host:port"}},
		{"job with missing source", strings.Replace(withJob(""), "source: hv01", "source: hv09", 1),
			[]string{`jobs[0].source: no host named "hv09" in hosts`}},
		{"job with missing target", strings.Replace(withJob(""), "target: dr01", "target: dr09", 1),
			[]string{`jobs[0].target: no target named "dr09" in targets`}},
		{"job without source and target", header + "jobs: [{name: x}]\n",
			[]string{"jobs[0].source: required", "jobs[0].target: required"}},
		{"job name too long", strings.Replace(withJob(""), "name: j1", "name: "+strings.Repeat("j", 65), 1),
			[]string{"jobs[0].name: name \"" + strings.Repeat("j", 65) + "\" is 65 characters long: at most 64"}},
		{"job name with backslash", strings.Replace(withJob(""), "name: j1", `name: 'a\b'`, 1),
			[]string{`jobs[0].name: name "a\\b" contains a path separator`}},
		{"job name with NUL", strings.Replace(withJob(""), "name: j1", `name: "a\0b"`, 1),
			[]string{`jobs[0].name: name "a\x00b" contains a NUL byte`}},
		{"job name with space", strings.Replace(withJob(""), "name: j1", `name: "my job"`, 1),
			[]string{`jobs[0].name: name "my job" contains ' '`}},
		{"duplicate job", header + "jobs:\n  - {name: j, source: hv01, target: dr01}\n  - {name: j, source: hv02, target: dr01}\n",
			[]string{`jobs[1].name: duplicate name "j" (also jobs[0])`}},
		{"unknown compression", withJob("compression: zstd"),
			[]string{`jobs[0].compression: unknown compression "zstd": want one of none, fast, optimal, high, extreme`}},
		{"unknown change tracking", withJob("changeTracking: cbt"),
			[]string{`jobs[0].changeTracking: unknown change tracking "cbt": want one of auto, rct, digest, full`}},
		{"block size not power of two", withJob("blockSize: 768KiB"),
			[]string{"jobs[0].blockSize: 768KiB (786432 bytes) is not a power of two"}},
		{"block size too small", withJob("blockSize: 4KiB"),
			[]string{"jobs[0].blockSize: 4KiB (4096 bytes) out of range: want a power of two from 64KiB to 64MiB"}},
		{"block size too large", withJob("blockSize: 128MiB"),
			[]string{"jobs[0].blockSize: 128MiB (134217728 bytes) out of range"}},
		{"block size not a size", withJob("blockSize: big"),
			[]string{`jobs[0].blockSize: invalid size "big"`}},
		{"block size unknown unit", withJob("blockSize: 1MiBs"),
			[]string{`jobs[0].blockSize: invalid size "1MiBs": unknown unit "MiBs"`}},
		{"negative window", withJob("window: -1h"),
			[]string{"jobs[0].window: negative (-1h0m0s)"}},
		{"window without unit", withJob("window: 90"),
			[]string{`jobs[0].window: invalid duration "90": a duration needs a unit`}},
		{"window not a duration", withJob("window: forever"),
			[]string{`jobs[0].window: invalid duration "forever"`}},
		{"throttle without a unit of time", strings.Replace(withJob(""), `address: "dr01.example:7300"}`, `address: "dr01.example:7300", throttle: [{limit: 50MiB}]}`, 1),
			[]string{`targets[0].throttle[0].limit: bandwidth "50MiB": want a size per second such as 50MiB/s`}},
		{"throttle with bad hours", strings.Replace(withJob(""), `address: "dr01.example:7300"}`, `address: "dr01.example:7300", throttle: [{limit: 5MiB/s, hours: "Mon-Fri 8-18"}]}`, 1),
			[]string{`targets[0].throttle[0].hours: rule 1 "Mon-Fri 8-18": time "8"`}},
		{"negative retries", withJob("retries: -1"), []string{"jobs[0].retries: -1: want 0 (no retry) to 100"}},
		{"negative retry wait", withJob("retryWait: -5m"), []string{"jobs[0].retryWait: negative (-5m0s)"}},
		{"rpo too short", withJob("rpo: 5s"), []string{"jobs[0].rpo: 5s: want a duration from 10s to 24h0m0s, such as 30s or 5m (or none)"}},
		{"rpo without unit", withJob("rpo: 30"), []string{`jobs[0].rpo: invalid duration "30": a duration needs a unit`}},
		{"unknown time zone", withJob("timezone: Mars/Olympus"),
			[]string{`jobs[0].timezone: unknown time zone "Mars/Olympus": want an IANA name`}},
		{"bad window hours", withJob(`windowHours: "Mon-Fri 20:00-30:00"`),
			[]string{`jobs[0].windowHours: rule 1 "Mon-Fri 20:00-30:00": time "30:00"`}},
		{"unknown overlap", withJob("overlap: queue"),
			[]string{`jobs[0].overlap: unknown overlap "queue": want one of skip, wait`}},
		{"retention zero", withJob("retention: 0"),
			[]string{"jobs[0].retention: 0: want at least 1 restore point"}},
		{"negative retention", withJob("retention: -3"),
			[]string{"jobs[0].retention: -3: want at least 1 restore point"}},
		{"retention not a number", withJob("retention: seven"),
			[]string{`jobs[0].retention: invalid number "seven": want a whole number`}},
		{"parallelism zero", withJob("parallelism: 0"),
			[]string{"jobs[0].parallelism: 0: want 1 to 64 VMs at once"}},
		{"parallelism too high", withJob("parallelism: 65"),
			[]string{"jobs[0].parallelism: 65: want 1 to 64 VMs at once"}},
		{"empty vms", withJob("vms: []"), []string{`jobs[0].vms: empty`}},
		{"empty vm entry", withJob(`vms: [web01, ""]`), []string{"jobs[0].vms[1]: empty entry"}},
		{"vms a mapping", withJob("vms: {a: b}"), []string{"jobs[0].vms: want a list, got a mapping"}},
		{"empty exclude path", withJob(`exclude: {paths: ["/tmp", " "]}`), []string{"jobs[0].exclude.paths[1]: empty entry"}},
		{"exclude path with NUL", withJob(`exclude: {paths: ["/tmp\0"]}`), []string{"jobs[0].exclude.paths[0]: contains a NUL byte"}},
		{"exclude swap not a bool", withJob("exclude: {swap: maybe}"), []string{`jobs[0].exclude.swap: want true or false, got "maybe"`}},
		{"on failure unknown", withJob("guestProcessing: {onFailure: retry}"),
			[]string{`jobs[0].guestProcessing.onFailure: unknown "retry": want fail or continue`}},
		{"guest processing without credentials", withJob("guestProcessing: {enabled: true}"),
			[]string{"jobs[0].guestProcessing.ssh.user: required when guest processing is enabled",
				"jobs[0].guestProcessing.ssh.keyFile: required when guest processing is enabled (or ssh.passwordFile)",
				"jobs[0].guestProcessing.ssh.knownHosts: required when guest processing is enabled"}},
		{"guest processing without known hosts", withJob("guestProcessing: {enabled: true, ssh: {user: u, passwordFile: /p}}"),
			[]string{"jobs[0].guestProcessing.ssh.knownHosts: required"}},
		{"guest processing zero timeout", withJob("guestProcessing: {enabled: true, timeout: 0, ssh: {user: u, keyFile: /k, knownHosts: /kh}}"),
			[]string{"jobs[0].guestProcessing.timeout: must be positive when guest processing is enabled"}},
		{"empty pre-freeze command", withJob(`guestProcessing: {preFreeze: ["sync", ""]}`),
			[]string{"jobs[0].guestProcessing.preFreeze[1]: empty entry"}},
		{"guest without address", withJob(`guestProcessing: {guests: {web01: ""}}`),
			[]string{"jobs[0].guestProcessing.guests.web01: empty address: want host or host:port"}},
		{"negative guest timeout", withJob("guestProcessing: {timeout: -1m}"),
			[]string{"jobs[0].guestProcessing.timeout: negative (-1m0s)"}},
		{"string where a mapping belongs", withJob("") + "metrics: ':9090'\n",
			[]string{`metrics: want a mapping, got ":9090"`}},
		{"list where a string belongs", strings.Replace(withJob(""), "name: j1", "name: [j1]", 1),
			[]string{"jobs[0].name: want a string, got a list"}},
		{"agent without listen and datastore", withJob("") + "agent: {name: dr01}\n",
			[]string{"agent.listen: required: host:port", "agent.datastore: required when agent.name is set"}},
		{"agent listen without port", withJob("") + "agent: {name: dr01, listen: dr01, datastore: /r}\n",
			[]string{`agent.listen: invalid address "dr01": want host:port`}},
		{"agent datastore without name", withJob("") + "agent: {datastore: /r}\n",
			[]string{"agent.name: required when agent.listen or agent.datastore is set"}},
		{"agent name with slash", withJob("") + "agent: {name: ../x, listen: ':1', datastore: /r}\n",
			[]string{`agent.name: name "../x" contains a path separator`}},
		{"tls incomplete", withJob("") + "tls: {ca: /ca.pem}\n",
			[]string{"tls.cert: required: set all of tls.ca, tls.cert and tls.key, or none",
				"tls.key: required: set all of tls.ca, tls.cert and tls.key, or none"}},
		{"temporal tls cert without key", strings.Replace(withJob(""), `"temporal.example:7233"}`, `"temporal.example:7233", tls: {cert: /c.pem}}`, 1),
			[]string{"temporal.tls.key: required when temporal.tls.cert is set"}},
		{"metrics listen bad", withJob("") + "metrics: {listen: 'localhost'}\n",
			[]string{`metrics.listen: invalid address "localhost": want host:port`}},
		{"unknown top-level key", withJob("") + "worker: {roles: all}\n", []string{"worker: unknown key"}},
		{"unknown job key", withJob("compresion: fast"), []string{"jobs[0].compresion: unknown key"}},
		{"duplicate key in job", withJob("retention: 3\nretention: 4"), []string{"jobs[0].retention: duplicate key (first at line"}},
		{"jobs not a list", header + "jobs: {name: j}\n", []string{"jobs: want a list, got a mapping"}},
		{"host a string", "temporal: {address: 'a:1'}\nhosts: [hv01]\n", []string{`hosts[0]: want a mapping, got "hv01"`}},
		{"top level a list", "- a\n- b\n", []string{"want a mapping, got a list", "temporal.address: required"}},
		{"hyperv password without user", strings.Replace(withJob(""), `path: "."`, `path: ".", passwordFile: /p`, 1),
			[]string{"hosts[1].username: required when passwordFile is set"}},
		{"many problems at once", withJob("compression: zip\nretention: 0\nparallelism: 100\nblockSize: 3MiB\nwindow: -5m"),
			[]string{"jobs[0].compression:", "jobs[0].retention:", "jobs[0].parallelism:", "jobs[0].blockSize:", "jobs[0].window:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadText(t, tc.yaml)
			if cfg != nil {
				t.Errorf("Load returned a configuration along with the error")
			}
			assertProblems(t, err, tc.want...)
		})
	}
}

func TestAliasesCannotExplode(t *testing.T) {
	clearEnv(t)
	// Each level merges the one below ten times: 10^12 values if expanded.
	var b strings.Builder
	b.WriteString("temporal: {address: 'a:1'}\nhosts:\n  - &l0 {name: h}\n")
	for level := 1; level <= 12; level++ {
		fmt.Fprintf(&b, "  - &l%d {<<: [", level)
		for k := 0; k < 10; k++ {
			if k > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*l%d", level-1)
		}
		b.WriteString("]}\n")
	}
	_, err := loadText(t, b.String())
	if err == nil || !strings.Contains(err.Error(), "too many values: aliases expand to more than") {
		t.Fatalf("Load = %v, want it to stop expanding aliases", err)
	}
}

func TestAliasInsideItsAnchor(t *testing.T) {
	clearEnv(t)
	_, err := loadText(t, header+"jobs:\n  - &j {name: a, source: hv01, target: dr01, <<: *j}\n")
	assertProblems(t, err, "jobs[0]: alias *j refers to a value that contains it")
}

// FuzzDecode feeds arbitrary text to the decoder and the validator: bad
// input is a problem or an error, never a panic or a hang.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(withJob("compression: fast")))
	f.Add([]byte(header + "jobs:\n  - &j {name: a, <<: *j}\n"))
	f.Add([]byte("jobs: &x [{name: a, vms: *x}]"))
	f.Add([]byte("- a\n- b"))
	f.Add([]byte("temporal: {address: [1, {a: b}]}\njobs: [{blockSize: 1e400, window: 1y}]"))
	if data, err := os.ReadFile("example.yaml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, problems, _, err := decodeYAML(Defaults(), data)
		if err != nil {
			return
		}
		for _, p := range problems {
			if p.Path == "" || p.Reason == "" {
				t.Errorf("problem without path or reason: %+v", p)
			}
		}
		for _, p := range cfg.validate() {
			if p.Path == "" || p.Reason == "" {
				t.Errorf("problem without path or reason: %+v", p)
			}
		}
	})
}

func TestProblemsInFileOrderWithLines(t *testing.T) {
	clearEnv(t)
	_, err := loadText(t, `temporal: {address: localhost}
hosts:
  - {name: hv01, provider: vmware}
jobs:
  - name: demo
    source: hv01
    target: dr01
    compresion: fast
    retention: 0
`)
	assertProblems(t, err,
		`temporal.address: invalid address "localhost": want host:port (line 1)`,
		`hosts[0].provider: unknown provider "vmware": want one of lab, hyperv, hyperv-sim (line 3)`,
		`jobs[0].target: no target named "dr01" in targets (line 7)`,
		`jobs[0].compresion: unknown key; did you mean "compression"? (line 8)`,
		`jobs[0].retention: 0: want at least 1 restore point (line 9)`)
	msg := err.Error()
	if strings.Index(msg, "temporal.address") > strings.Index(msg, "jobs[0].compresion") ||
		strings.Index(msg, "jobs[0].compresion") > strings.Index(msg, "jobs[0].retention") {
		t.Errorf("problems not in the order of the file:\n%s", msg)
	}
}

func TestAddFlags(t *testing.T) {
	clearEnv(t)
	fs := pflag.NewFlagSet("workers", pflag.ContinueOnError)
	fs.String("agent.listen", "", "defined by the command itself")
	AddFlags(fs)
	for _, key := range OverrideKeys() {
		f := fs.Lookup(key)
		if f == nil {
			t.Errorf("no flag --%s", key)
			continue
		}
		if key != "agent.listen" && (keyUsage[key] == "" || f.DefValue != "") {
			t.Errorf("flag --%s: usage %q default %q", key, f.Usage, f.DefValue)
		}
	}
	if err := fs.Parse([]string{"--metrics.listen=:9300", "--agent.listen=127.0.0.1:7400", "--temporal.namespace", "ops"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(LoadOptions{DataDir: t.TempDir(), Flags: fs})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics.Listen != ":9300" || cfg.Agent.Listen != "127.0.0.1:7400" || cfg.Temporal.Namespace != "ops" || cfg.Temporal.Address != "127.0.0.1:7233" {
		t.Errorf("flags applied as %+v", cfg)
	}
}
