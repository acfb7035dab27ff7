package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
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

	overrideProblems, sources := applyOverrides(cfg, o.Flags)
	problems = append(problems, overrideProblems...)
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

// decodeYAML reads a YAML document over base (the defaults). It returns an error
// only when the text is not YAML; keys and values at fault are problems.
// lines maps each key path found in the file to its line.
//
// The file is parsed with the YAML library viper uses, but not through
// viper: viper lowercases every key, map keys included, and VM names in
// guestProcessing.guests must keep their case; it also loses the lines
// that problems are reported with.
func decodeYAML(base *Config, data []byte) (cfg *Config, problems []Problem, lines map[string]int, err error) {
	cfg = base
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return cfg, nil, nil, nil
	}
	d := decoder{lines: map[string]int{}}
	d.decode("", doc.Content[0], reflect.ValueOf(cfg).Elem())
	return cfg, d.problems, d.lines, nil
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

// applyOverrides sets the keys named by REPLICATOR_* variables and by changed
// flags, flags winning. Viper does the layering; the values are decoded like
// the file's, so "90m" and "1MiB" mean the same everywhere.
//
// It returns the problems of decoding, and where each overridden key's value
// came from ("flag --temporal.address", "REPLICATOR_TEMPORAL_ADDRESS").
func applyOverrides(cfg *Config, flags *pflag.FlagSet) ([]Problem, map[string]string) {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AllowEmptyEnv(true)
	keys := OverrideKeys()
	byLower := map[string]string{}
	for _, k := range keys {
		byLower[strings.ToLower(k)] = k
		if err := v.BindEnv(k); err != nil {
			return []Problem{{Path: k, Reason: err.Error()}}, nil
		}
	}
	var problems []Problem
	flagOf := map[string]string{}
	if flags != nil {
		flags.VisitAll(func(f *pflag.Flag) {
			if key, ok := byLower[strings.ToLower(f.Name)]; ok && f.Changed {
				if err := v.BindPFlag(key, f); err != nil {
					problems = append(problems, Problem{Path: "--" + f.Name, Reason: err.Error()})
					return
				}
				flagOf[key] = "flag --" + f.Name
			}
		})
	}
	problems = append(problems, unknownEnv(keys)...)

	d := decoder{splitScalars: true}
	root := reflect.ValueOf(cfg).Elem()
	sources := map[string]string{}
	for _, k := range keys {
		if !v.IsSet(k) {
			continue
		}
		if src, ok := flagOf[k]; ok {
			sources[k] = src
		} else {
			sources[k] = EnvName(k)
		}
		node := overrideNode(v.Get(k))
		field, ok := fieldByPath(root, k)
		if !ok {
			continue
		}
		d.decode(k, node, field)
	}
	for i := range d.problems {
		d.problems[i].Reason += " (from " + sources[d.problems[i].Path] + ")"
	}
	return append(problems, d.problems...), sources
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

// overrideNode turns a value from viper (a string from the environment, a
// typed value from a flag) into a node for the decoder.
func overrideNode(val any) *yaml.Node {
	switch x := val.(type) {
	case []string:
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, s := range x {
			seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s})
		}
		return seq
	case time.Duration:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: x.String()}
	default:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: fmt.Sprint(x)}
	}
}

// fieldByPath finds the field of a dotted key path in a struct value.
func fieldByPath(v reflect.Value, path string) (reflect.Value, bool) {
	for _, part := range strings.Split(path, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		found := false
		for i := 0; i < v.NumField(); i++ {
			if strings.EqualFold(yamlKey(v.Type().Field(i)), part) {
				v = v.Field(i)
				found = true
				break
			}
		}
		if !found {
			return reflect.Value{}, false
		}
	}
	return v, true
}

// yamlKey is a field's key in the file: its yaml tag.
// notAKey says a field is not a key of the file (yaml:"-"): it is set
// from elsewhere (the Temporal CLI's variables) and never overridden.
func notAKey(f reflect.StructField) bool { return f.Tag.Get("yaml") == "-" }

func yamlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" {
		return f.Name
	}
	return name
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	byteSizeType = reflect.TypeOf(ByteSize(0))
	jobType      = reflect.TypeOf(Job{})
)

// decoder fills a value from YAML nodes, collecting every problem with its
// key path rather than stopping at the first. Keys are matched to the yaml
// tags exactly, or else case-insensitively; map keys (VM names) keep their case.
type decoder struct {
	// splitScalars reads "a,b" as a list where a list is expected: the form
	// lists take in environment variables and flags.
	splitScalars bool
	problems     []Problem

	// expanding holds the anchors whose aliases are being decoded: an alias
	// inside its own anchor would otherwise recurse without end.
	expanding map[*yaml.Node]bool
	// nodes counts decoded nodes, against aliases that expand exponentially.
	nodes     int
	exhausted bool
	// lines records where each key path stands, when not nil.
	lines map[string]int
}

func (d *decoder) at(path string, n *yaml.Node) {
	if d.lines != nil && n != nil {
		if _, ok := d.lines[path]; !ok {
			d.lines[path] = n.Line
		}
	}
}

// maxDecodedNodes bounds the work of one file; real configurations have a
// few thousand values.
const maxDecodedNodes = 1_000_000

// follow resolves an alias node and marks its anchor as being expanded
// until release is called; it reports a problem when the alias refers to
// nothing or to a node that contains it.
func (d *decoder) follow(path string, n *yaml.Node) (target *yaml.Node, release func(), ok bool) {
	target = n.Alias
	if target == nil {
		d.fail(path, n, "alias *%s refers to nothing", n.Value)
		return nil, nil, false
	}
	if d.expanding[target] {
		d.fail(path, n, "alias *%s refers to a value that contains it", n.Value)
		return nil, nil, false
	}
	if d.expanding == nil {
		d.expanding = map[*yaml.Node]bool{}
	}
	d.expanding[target] = true
	return target, func() { delete(d.expanding, target) }, true
}

func (d *decoder) fail(path string, n *yaml.Node, format string, args ...any) {
	if path == "" {
		path = "(top level)"
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	d.problems = append(d.problems, Problem{Path: path, Reason: fmt.Sprintf(format, args...), Line: line})
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

func joinPath(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// decode sets v from n. A null leaves v as it was, so that defaults stand.
func (d *decoder) decode(path string, n *yaml.Node, v reflect.Value) {
	if d.nodes++; d.nodes > maxDecodedNodes {
		if !d.exhausted {
			d.exhausted = true
			d.fail(path, n, "too many values: aliases expand to more than %d", maxDecodedNodes)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		target, release, ok := d.follow(path, n)
		if ok {
			d.decode(path, target, v)
			release()
		}
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	t := v.Type()
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			d.fail(path, n, "want a duration such as 90m or 1h30m, got %s", kindName(n))
			return
		}
		s := strings.TrimSpace(n.Value)
		if s == "0" {
			v.SetInt(0)
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
				d.fail(path, n, "invalid duration %q: a duration needs a unit, such as 90m, 1h30m or 45s", n.Value)
			} else {
				d.fail(path, n, "invalid duration %q: want a Go duration such as 90m, 1h30m or 0", n.Value)
			}
			return
		}
		v.SetInt(int64(dur))
	case t == byteSizeType:
		if n.Kind != yaml.ScalarNode {
			d.fail(path, n, "want a size such as 1MiB, got %s", kindName(n))
			return
		}
		size, err := ParseByteSize(n.Value)
		if err != nil {
			d.fail(path, n, "%v", err)
			return
		}
		v.SetInt(int64(size))
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(path, n, "want a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case t.Kind() == reflect.Int:
		if n.Kind != yaml.ScalarNode {
			d.fail(path, n, "want a whole number, got %s", kindName(n))
			return
		}
		i, err := strconv.ParseInt(strings.TrimSpace(n.Value), 10, 64)
		if err != nil || int64(int(i)) != i {
			d.fail(path, n, "invalid number %q: want a whole number", n.Value)
			return
		}
		v.SetInt(i)
	case t.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(n.Value))
		if n.Kind != yaml.ScalarNode || err != nil {
			d.fail(path, n, "want true or false, got %s", kindName(n))
			return
		}
		v.SetBool(b)
	case t.Kind() == reflect.Slice:
		d.decodeSlice(path, n, v)
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String:
		d.decodeMap(path, n, v)
	case t.Kind() == reflect.Struct:
		d.decodeStruct(path, n, v)
	default:
		d.fail(path, n, "cannot be set (type %s)", t)
	}
}

func (d *decoder) decodeSlice(path string, n *yaml.Node, v reflect.Value) {
	t := v.Type()
	var items []*yaml.Node
	switch {
	case n.Kind == yaml.SequenceNode:
		items = n.Content
	case n.Kind == yaml.ScalarNode && t.Elem().Kind() == reflect.String:
		// One value where a list is expected is a list of one; from the
		// environment or a flag, "a,b" is a list of two.
		parts := []string{n.Value}
		if d.splitScalars {
			parts = nil
			for _, p := range strings.Split(n.Value, ",") {
				if p = strings.TrimSpace(p); p != "" {
					parts = append(parts, p)
				}
			}
		}
		for _, p := range parts {
			items = append(items, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: p, Line: n.Line})
		}
	default:
		d.fail(path, n, "want a list, got %s", kindName(n))
		return
	}
	if len(items) == 0 {
		v.Set(reflect.Zero(t))
		return
	}
	out := reflect.MakeSlice(t, len(items), len(items))
	for i, item := range items {
		elem := out.Index(i)
		if t.Elem() == jobType {
			elem.Set(reflect.ValueOf(DefaultJob()))
		}
		d.at(fmt.Sprintf("%s[%d]", path, i), item)
		d.decode(fmt.Sprintf("%s[%d]", path, i), item, elem)
	}
	v.Set(out)
}

func (d *decoder) decodeMap(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "want a mapping, got %s", kindName(n))
		return
	}
	t := v.Type()
	out := reflect.MakeMapWithSize(t, len(n.Content)/2)
	lines := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		keyPath := joinPath(path, k.Value)
		if first, dup := lines[k.Value]; dup {
			d.fail(keyPath, k, "duplicate key (first at line %d)", first)
			continue
		}
		lines[k.Value] = k.Line
		d.at(keyPath, k)
		elem := reflect.New(t.Elem()).Elem()
		d.decode(keyPath, val, elem)
		out.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), elem)
	}
	if out.Len() == 0 {
		out = reflect.Zero(t)
	}
	v.Set(out)
}

func (d *decoder) decodeStruct(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "want a mapping, got %s", kindName(n))
		return
	}
	t := v.Type()
	// Merge keys (<<: *defaults) first, so that the mapping's own keys win
	// wherever they stand.
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Tag != "!!merge" {
			continue
		}
		// The value is a mapping, an alias to one, or a list of those.
		if val.Kind == yaml.AliasNode && val.Alias != nil && val.Alias.Kind == yaml.SequenceNode {
			target, release, ok := d.follow(path, val)
			if !ok {
				continue
			}
			for _, m := range target.Content {
				d.decode(path, m, v)
			}
			release()
			continue
		}
		if val.Kind == yaml.SequenceNode {
			for _, m := range val.Content {
				d.decode(path, m, v)
			}
			continue
		}
		d.decode(path, val, v)
	}
	seen := map[int]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			continue
		}
		keyPath := joinPath(path, k.Value)
		idx := fieldIndex(t, k.Value)
		if idx < 0 {
			reason := "unknown key"
			if s := suggestKey(t, k.Value); s != "" {
				reason += fmt.Sprintf("; did you mean %q?", s)
			}
			d.fail(keyPath, k, "%s", reason)
			continue
		}
		if first, dup := seen[idx]; dup {
			d.fail(keyPath, k, "duplicate key (first at line %d as %q)", first.Line, first.Value)
			continue
		}
		seen[idx] = k
		d.at(joinPath(path, yamlKey(t.Field(idx))), k)
		d.decode(joinPath(path, yamlKey(t.Field(idx))), val, v.Field(idx))
	}
}

// fieldIndex finds the field of a key: exact match first, then ignoring case.
func fieldIndex(t reflect.Type, key string) int {
	for i := 0; i < t.NumField(); i++ {
		if yamlKey(t.Field(i)) == key && !notAKey(t.Field(i)) {
			return i
		}
	}
	for i := 0; i < t.NumField(); i++ {
		if strings.EqualFold(yamlKey(t.Field(i)), key) && !notAKey(t.Field(i)) {
			return i
		}
	}
	return -1
}

// suggestKey returns the known key nearest to a misspelt one, if near enough.
func suggestKey(t reflect.Type, key string) string {
	best, bestDist := "", 3
	for i := 0; i < t.NumField(); i++ {
		name := yamlKey(t.Field(i))
		if dist := editDistance(strings.ToLower(key), strings.ToLower(name)); dist < bestDist {
			best, bestDist = name, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
