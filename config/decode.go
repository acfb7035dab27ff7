package config

import (
	"fmt"
	"iter"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The configuration has one decoding path: every layer (the file, the
// environment, the flags) is a tree of YAML nodes, and decoder sets the
// Config from it by the fields' yaml tags. It checks every key against the
// fields (known-field checks, with a suggestion for a misspelt key), reads
// durations and byte sizes, keeps defaults where a value is null or absent,
// and collects every problem with its key path and line rather than stopping
// at the first.
//
// yaml.v3's own Decoder, even with KnownFields, cannot give that: it says
// "line 8: field compresion not found in type config.Job" and "cannot
// unmarshal !!str `seven` into int", with a line but no key path (a flow
// mapping holds many keys on one line), matches keys by exact case, rejects
// an unquoted 0 for a duration, and starts every element of a list from
// zero, so that a job would lose its defaults.

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

// notAKey says a field is not a key of the file (yaml:"-"): it is set
// from elsewhere (the Temporal CLI's variables) and never overridden.
func notAKey(f reflect.StructField) bool { return f.Tag.Get("yaml") == "-" }

// yamlKey is a field's key in the file: its yaml tag.
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
	problems []Problem

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
		switch {
		case n.Alias == nil:
			d.fail(path, n, "alias *%s refers to nothing", n.Value)
		case d.expanding[n.Alias]:
			d.fail(path, n, "alias *%s refers to a value that contains it", n.Value)
		default:
			if d.expanding == nil {
				d.expanding = map[*yaml.Node]bool{}
			}
			d.expanding[n.Alias] = true
			d.decode(path, n.Alias, v)
			delete(d.expanding, n.Alias)
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
		// One value where a list is expected is a list of one.
		items = []*yaml.Node{n}
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

// mapping reports whether n is a mapping; where it is not, it fails at path.
func (d *decoder) mapping(path string, n *yaml.Node) bool {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "want a mapping, got %s", kindName(n))
		return false
	}
	return true
}

// pairs yields the keys and values of a mapping node, in document order.
func pairs(n *yaml.Node) iter.Seq2[*yaml.Node, *yaml.Node] {
	return func(yield func(k, v *yaml.Node) bool) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if !yield(n.Content[i], n.Content[i+1]) {
				return
			}
		}
	}
}

func (d *decoder) decodeMap(path string, n *yaml.Node, v reflect.Value) {
	if !d.mapping(path, n) {
		return
	}
	t := v.Type()
	out := reflect.MakeMapWithSize(t, len(n.Content)/2)
	lines := map[string]int{}
	for k, val := range pairs(n) {
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
	if !d.mapping(path, n) {
		return
	}
	t := v.Type()
	// Merge keys (<<: *defaults) first, so that the mapping's own keys win
	// wherever they stand.
	for k, val := range pairs(n) {
		if k.Tag != "!!merge" {
			continue
		}
		// The value is a mapping, an alias to one, or a list of those (or an
		// alias to such a list), where the earlier mappings win
		// (yaml.org/type/merge.html): they are decoded last.
		if val.Kind == yaml.AliasNode && val.Alias != nil && val.Alias.Kind == yaml.SequenceNode {
			val = val.Alias
		}
		merged := []*yaml.Node{val}
		if val.Kind == yaml.SequenceNode {
			merged = val.Content
		}
		for m := len(merged) - 1; m >= 0; m-- {
			d.decode(path, merged[m], v)
		}
	}
	seen := map[int]*yaml.Node{}
	for k, val := range pairs(n) {
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
