package docs

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/metrics"
	"github.com/replicator/replicator/workflows"
)

// section returns the first cell of every table row of contract.md under
// the heading (up to the next heading of the same or a higher level), with
// its backquotes removed: the names the section documents.
func section(t *testing.T, heading string) []string {
	t.Helper()
	data, err := os.ReadFile("contract.md")
	if err != nil {
		t.Fatal(err)
	}
	level := strings.Index(heading, " ")
	var names []string
	in, found := false, false
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			l := strings.Index(line, " ")
			if in && l <= level {
				break
			}
			if line == heading {
				in, found = true, true
			}
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| `"), "` |")
		names = append(names, cell)
	}
	if !found {
		t.Fatalf("contract.md has no heading %q", heading)
	}
	if len(names) == 0 {
		t.Fatalf("contract.md: no names under %q", heading)
	}
	return names
}

// sameSets fails the test with what one side has that the other lacks.
func sameSets(t *testing.T, what string, doc, code []string) {
	t.Helper()
	for _, d := range doc {
		if !slices.Contains(code, d) {
			t.Errorf("contract.md documents %s %q, which the code does not have", what, d)
		}
	}
	for _, c := range code {
		if !slices.Contains(doc, c) {
			t.Errorf("%s %q is missing from contract.md", what, c)
		}
	}
}

// configKeys walks the configuration by its yaml tags: a nested mapping
// gives "section.key", a list of mappings "section[].key".
func configKeys(prefix string, typ reflect.Type) []string {
	var keys []string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Duration(0)):
			keys = append(keys, configKeys(key+".", ft)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			keys = append(keys, configKeys(key+"[].", ft.Elem())...)
		default:
			keys = append(keys, key)
		}
	}
	return keys
}

func TestConfigKeysDocumented(t *testing.T) {
	keys := configKeys("", reflect.TypeOf(config.Config{}))
	if len(keys) < 50 || !slices.Contains(keys, "jobs[].guestProcessing.ssh.knownHosts") {
		t.Fatalf("walked only %d keys: %v", len(keys), keys)
	}
	sameSets(t, "configuration key", section(t, "### Keys"), keys)
}

// registry records the names workflows.Register registers.
type registry struct{ names []string }

func (r *registry) RegisterWorkflowWithOptions(_ interface{}, o workflow.RegisterOptions) {
	r.names = append(r.names, o.Name)
}

func TestWorkflowTypesDocumented(t *testing.T) {
	var r registry
	workflows.Register(&r)
	sameSets(t, "workflow type", section(t, "### Workflow types"), r.names)
}

// collectors records what the metrics packages register.
type collectors struct{ list []prometheus.Collector }

func (c *collectors) Register(col prometheus.Collector) error {
	c.list = append(c.list, col)
	return nil
}
func (c *collectors) MustRegister(cols ...prometheus.Collector) { c.list = append(c.list, cols...) }
func (c *collectors) Unregister(prometheus.Collector) bool      { return false }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func TestMetricsDocumented(t *testing.T) {
	var reg collectors
	metrics.NewDataPath(&reg)
	metrics.NewRPO(&reg, func() ([]metrics.Replica, error) { return nil, nil }, nil)
	ch := make(chan *prometheus.Desc, 100)
	for _, c := range reg.list {
		c.Describe(ch)
	}
	close(ch)
	var names []string
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		names = append(names, m[1])
	}
	var doc []string
	for _, n := range section(t, "## Metrics") {
		if strings.HasPrefix(n, "replicator_") {
			doc = append(doc, n)
		}
	}
	sameSets(t, "metric", doc, names)
}

// answersHelp runs `starter PATH --help` and says whether it exits 0 with
// the usage of that very command; it returns the help text.
func answersHelp(t *testing.T, bin, path string) (out string, ok bool) {
	t.Helper()
	args := append(strings.Fields(path), "--help")
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("starter %s --help: %v\n%s", path, err, b)
		return string(b), false
	}
	// An unknown subcommand of a group answers with the group's help, so
	// the usage line must name the command itself.
	want := "starter " + path
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == want || strings.HasPrefix(line, want+" ") {
			return string(b), true
		}
	}
	t.Errorf("starter %s --help does not show its own usage:\n%s", path, b)
	return string(b), false
}

// subcommands reads the "Available Commands:" of a cobra help text.
func subcommands(help string) []string {
	var subs []string
	_, rest, ok := strings.Cut(help, "Available Commands:\n")
	if !ok {
		return nil
	}
	for _, line := range strings.Split(rest, "\n") {
		if strings.TrimSpace(line) == "" {
			break
		}
		name := strings.Fields(line)[0]
		if name != "help" && name != "completion" {
			subs = append(subs, name)
		}
	}
	return subs
}

var commandWord = regexp.MustCompile(`^[a-z][a-z-]*$`)

// commandPath is the command of a documented command line: the words after
// "starter" up to the first argument or flag ("failover plan undo NAME").
func commandPath(line string) string {
	var words []string
	for _, w := range strings.Fields(strings.TrimPrefix(line, "starter ")) {
		if !commandWord.MatchString(w) {
			break
		}
		words = append(words, w)
	}
	return strings.Join(words, " ")
}

func TestStarterCommandsDocumented(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "starter")
	build := exec.Command("go", "build", "-o", bin, "github.com/replicator/replicator/starter")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build starter: %v\n%s", err, out)
	}

	var doc []string
	for _, line := range section(t, "## starter") {
		if p := commandPath(line); p != "" && !slices.Contains(doc, p) {
			doc = append(doc, p)
		}
	}
	for _, p := range doc {
		answersHelp(t, bin, p)
	}

	// Every command the starter offers is documented: the leaves of its
	// command tree as its help shows it.
	var leaves []string
	var walk func(path string)
	walk = func(path string) {
		help, ok := "", true
		if path == "" {
			out, err := exec.Command(bin, "--help").CombinedOutput()
			if err != nil {
				t.Fatalf("starter --help: %v\n%s", err, out)
			}
			help = string(out)
		} else if help, ok = answersHelp(t, bin, path); !ok {
			return
		}
		subs := subcommands(help)
		if len(subs) == 0 && path != "" {
			leaves = append(leaves, path)
		}
		for _, s := range subs {
			walk(strings.TrimSpace(path + " " + s))
		}
	}
	walk("")
	sort.Strings(leaves)
	if len(leaves) < 20 {
		t.Fatalf("found only %d starter commands: %v", len(leaves), leaves)
	}
	for _, l := range leaves {
		if !slices.Contains(doc, l) {
			t.Errorf("starter %s is missing from contract.md", l)
		}
	}
}
