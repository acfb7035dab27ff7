package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts the name of every environment variable that overrides a
// key: REPLICATOR_TEMPORAL_ADDRESS overrides temporal.address.
const EnvPrefix = "REPLICATOR"

// DefaultDataDir is where --dev keeps its state when --data-dir is not given.
const DefaultDataDir = ".replicator"

// LoadOptions say where the configuration comes from.
type LoadOptions struct {
	// File is a YAML configuration file. Empty means the --dev configuration,
	// Dev(DataDir).
	File string
	// DataDir is the --data-dir of the dev stack; empty means DefaultDataDir.
	DataDir string
	// Flags, when not nil, override keys: a flag named like a key path
	// ("temporal.address", "agent.listen", "metrics.listen") overrides that
	// key when it was set on the command line.
	Flags *pflag.FlagSet
}

// Load builds the configuration from its layers, lowest first: the defaults,
// the Temporal CLI's variables (TEMPORAL_ADDRESS, …: temporalenv.go) and the
// file (or Dev(DataDir) alone when there is no file), then environment
// variables REPLICATOR_<SECTION>_<KEY>, then changed flags. It validates the
// result as a whole: on any problem it returns a *ValidationError naming
// every key path at fault, and no configuration.
func Load(o LoadOptions) (*Config, error) {
	var cfg *Config
	var problems []Problem
	var lines map[string]int
	var envSources map[string]string
	if o.File == "" {
		dataDir := o.DataDir
		if dataDir == "" {
			dataDir = DefaultDataDir
		}
		cfg = Dev(dataDir)
	} else {
		data, err := os.ReadFile(o.File)
		if err != nil {
			return nil, fmt.Errorf("config: read %w", err)
		}
		base := Defaults()
		envSources, problems = temporalEnv(&base.Temporal, os.LookupEnv)
		var fileProblems []Problem
		cfg, fileProblems, lines, err = decodeYAML(base, data)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", o.File, err)
		}
		problems = append(problems, fileProblems...)
	}

	doc, sources, overrideProblems := overrides(o.Flags)
	problems = append(problems, overrideProblems...)
	if doc != nil {
		d := decoder{}
		d.decode("", doc, reflect.ValueOf(cfg).Elem())
		for _, p := range d.problems {
			p.Reason += " (from " + sources[p.Path] + ")"
			problems = append(problems, p)
		}
	}
	if sources == nil {
		sources = map[string]string{}
	}
	if o.File != "" {
		set := func(path string) bool { _, inFile := lines[path]; _, over := sources[path]; return inFile || over }
		problems = append(problems, temporalEnvDataProblems(os.LookupEnv, set)...)
		// What the file and the overrides leave to a Temporal CLI variable
		// is reported with the variable's name.
		for path, name := range envSources {
			if !set(path) {
				sources[path] = name
			}
		}
		if cfg.Temporal.APIKeyFile != "" {
			cfg.Temporal.APIKey = "" // the configured file wins
		}
	}

	if verr := cfg.validate(); verr != nil {
		// A key that failed to decode keeps its default, which may draw a
		// second, misleading complaint; the decoding problem is the one to show.
		decodeProblems := problems
		for _, p := range verr {
			if coveredBy(p.Path, decodeProblems) {
				continue
			}
			if src, ok := sources[p.Path]; ok {
				p.Reason += " (from " + src + ")"
			} else {
				p.Line = lines[p.Path]
			}
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		// In the order of the file; what the file lacks comes last.
		sort.SliceStable(problems, func(i, j int) bool {
			li, lj := problems[i].Line, problems[j].Line
			return li != 0 && (lj == 0 || li < lj)
		})
		return nil, &ValidationError{File: o.File, Problems: problems}
	}
	return cfg, nil
}

// coveredBy reports whether path is, or is under, the path of one of problems.
func coveredBy(path string, problems []Problem) bool {
	for _, p := range problems {
		if path == p.Path || strings.HasPrefix(path, p.Path+".") || strings.HasPrefix(path, p.Path+"[") {
			return true
		}
	}
	return false
}

// Defaults is the configuration before any file is read: what a file may leave out.
func Defaults() *Config {
	return &Config{
		Temporal: Temporal{Namespace: "default", TaskQueue: "replication"},
	}
}

// DefaultJob is a job with every key that a file may leave out filled in.
func DefaultJob() Job {
	return Job{
		VMs:             []string{"*"},
		Compression:     "optimal",
		BlockSize:       MiB,
		ChangeTracking:  "auto",
		Consistency:     "application",
		GuestBackupType: "copy",
		Exclude:         Exclude{ZeroBlocks: true, Swap: true},
		Retention:       7,
		Parallelism:     4,
		Overlap:         "skip",
		Timezone:        "UTC",
		Retries:         3,
		RetryWait:       10 * time.Minute,
		GuestProcessing: GuestProcessing{
			Method:    "ssh",
			OnFailure: "fail",
			Timeout:   10 * time.Minute,
		},
	}
}

// Dev is the configuration of `workers --dev`: every role on this machine,
// a lab host, one target served by this process's agent, and the demo job.
func Dev(dataDir string) *Config {
	if dataDir == "" {
		dataDir = DefaultDataDir
	}
	job := DefaultJob()
	job.Name, job.Source, job.Target = "demo", "hv01", "dr01"
	return &Config{
		Temporal: Temporal{Address: "127.0.0.1:7233", Namespace: "default", TaskQueue: "replication"},
		Hosts:    []Host{{Name: "hv01", Provider: "lab", Path: filepath.Join(dataDir, "lab")}},
		Targets:  []Target{{Name: "dr01", Address: "127.0.0.1:7300"}},
		Agent: Agent{Name: "dr01", Listen: "127.0.0.1:7300", Datastore: filepath.Join(dataDir, "replicas"),
			Host: Host{Name: "dr01", Provider: "lab", Path: filepath.Join(dataDir, "lab-dr")}},
		TLS: TLS{
			CA:   filepath.Join(dataDir, "pki", "ca.pem"),
			Cert: filepath.Join(dataDir, "pki", "node.pem"),
			Key:  filepath.Join(dataDir, "pki", "node-key.pem"),
		},
		Metrics: Metrics{Listen: "127.0.0.1:9090"},
		Jobs:    []Job{job},
	}
}

// OverrideKeys lists the key paths that environment variables and flags can
// override, in the camelCase of the file: temporal.address, agent.listen, …
// Lists (hosts, targets, jobs) are set in the file only.
func OverrideKeys() []string {
	var keys []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if notAKey(f) {
				continue
			}
			key := prefix + yamlKey(f)
			switch {
			case f.Type.Kind() == reflect.Struct && f.Type != durationType:
				walk(key+".", f.Type)
			case f.Type.Kind() == reflect.Slice || f.Type.Kind() == reflect.Map:
				// set in the file only
			default:
				keys = append(keys, key)
			}
		}
	}
	walk("", reflect.TypeOf(Config{}))
	return keys
}

// EnvName is the environment variable that overrides a key path:
// temporal.taskQueue → REPLICATOR_TEMPORAL_TASKQUEUE.
func EnvName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// overrides reads the keys set by REPLICATOR_* variables and by changed
// flags, flags winning (viper does the layering), as one more YAML document
// for the decoder: "90m" and "1MiB" mean the same there as in the file. Only
// keys of OverrideKeys take part, and their values are all scalars.
//
// It returns that document, where each key's value came from ("flag
// --temporal.address", "REPLICATOR_TEMPORAL_ADDRESS"), and the problems of
// binding and of misspelt variables.
func overrides(flags *pflag.FlagSet) (doc *yaml.Node, sources map[string]string, problems []Problem) {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AllowEmptyEnv(true)
	keys := OverrideKeys()
	byLower := map[string]string{}
	for _, k := range keys {
		byLower[strings.ToLower(k)] = k
		if err := v.BindEnv(k); err != nil {
			return nil, nil, []Problem{{Path: k, Reason: err.Error()}}
		}
	}
	sources = map[string]string{}
	if flags != nil {
		flags.Visit(func(f *pflag.Flag) { // the flags set on the command line
			key, ok := byLower[strings.ToLower(f.Name)]
			if !ok {
				return
			}
			if err := v.BindPFlag(key, f); err != nil {
				problems = append(problems, Problem{Path: "--" + f.Name, Reason: err.Error()})
				return
			}
			sources[key] = "flag --" + f.Name
		})
	}
	problems = append(problems, unknownEnv(keys)...)

	tree := map[string]any{}
	for _, k := range keys {
		if !v.IsSet(k) {
			continue
		}
		if _, ok := sources[k]; !ok {
			sources[k] = EnvName(k)
		}
		parts := strings.Split(k, ".")
		m := tree
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = v.GetString(k)
	}
	doc = new(yaml.Node)
	if err := doc.Encode(tree); err != nil {
		return nil, nil, append(problems, Problem{Path: "(environment and flags)", Reason: err.Error()})
	}
	return doc, sources, problems
}

// unknownEnv reports REPLICATOR_<SECTION>_… variables of a known section that
// name no key: a misspelt override would otherwise be silently ignored.
// Variables of other sections (REPLICATOR_DATA_DIR, …) belong to others.
func unknownEnv(keys []string) []Problem {
	known := map[string]bool{}
	for _, k := range keys {
		known[EnvName(k)] = true
	}
	sections := map[string]bool{}
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		sections[strings.ToUpper(yamlKey(t.Field(i)))] = true
	}
	var problems []Problem
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		rest, ok := strings.CutPrefix(name, EnvPrefix+"_")
		if !ok || known[name] {
			continue
		}
		section, _, _ := strings.Cut(rest, "_")
		if !sections[section] {
			continue
		}
		problems = append(problems, Problem{Path: name, Reason: "environment variable names no key that can be overridden (known: " + strings.Join(envNamesOf(keys, section), ", ") + ")"})
	}
	sort.Slice(problems, func(i, j int) bool { return problems[i].Path < problems[j].Path })
	return problems
}

func envNamesOf(keys []string, section string) []string {
	var names []string
	for _, k := range keys {
		if n := EnvName(k); strings.HasPrefix(n, EnvPrefix+"_"+section+"_") {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return []string{"none; set it in the file"}
	}
	return names
}
