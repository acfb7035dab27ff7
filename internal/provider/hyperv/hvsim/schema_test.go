package hvsim

import (
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/provider/hyperv"
	"github.com/replicator/replicator/internal/provider/lab"
)

// The schema conformance test: every class, method, in and out parameter
// (name and type), and property the Hyper-V provider passes or reads, and
// every method the simulator declares, must exist in Microsoft's generated
// stubs of root\virtualization\v2 (github.com/microsoft/wmi, read with
// go/parser), for Windows Server 2019 and 23H2. The scripting API drops a
// misspelled parameter without a word on a real host; here it fails CI.

// stubParam is one parameter of a generated method.
type stubParam struct {
	goType string // as written in the stub: string, uint16, []uint64, CIM_ConcreteJob, an enum name
	in     bool
	out    bool
}

// stubSchema is the classes of one namespace as the stubs declare them.
type stubSchema struct {
	embeds  map[string][]string             // class → embedded (base) classes
	fields  map[string]map[string]string    // class → property → Go type
	methods map[string]map[string][]stubArg // class → method → parameters in order
	enums   map[string]bool                 // enum type names (integers)
	classes map[string]bool
}

type stubArg struct {
	name string
	stubParam
}

var (
	schemaOnce sync.Once
	schemaDir  string
	schemaErr  error
)

// wmiModuleDir finds github.com/microsoft/wmi's source, downloading it if
// the module cache lacks it (on Linux nothing builds it).
func wmiModuleDir(t *testing.T) string {
	t.Helper()
	schemaOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/microsoft/wmi").Output()
		if err == nil && strings.TrimSpace(string(out)) != "" {
			schemaDir = strings.TrimSpace(string(out))
			return
		}
		out, err = exec.Command("go", "mod", "download", "-json", "github.com/microsoft/wmi").Output()
		if err != nil {
			schemaErr = fmt.Errorf("go mod download github.com/microsoft/wmi: %v\n%s", err, out)
			return
		}
		var m struct{ Dir string }
		if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
			schemaErr = fmt.Errorf("go mod download: no Dir in %s", out)
			return
		}
		schemaDir = m.Dir
	})
	if schemaErr != nil {
		t.Fatal(schemaErr)
	}
	return schemaDir
}

func loadSchema(t *testing.T, dir string) *stubSchema {
	t.Helper()
	fset := token.NewFileSet()
	s := &stubSchema{embeds: map[string][]string{}, fields: map[string]map[string]string{}, methods: map[string]map[string][]stubArg{}, enums: map[string]bool{}, classes: map[string]bool{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") {
			continue
		}
		src, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, e.Name(), src, parser.ParseComments)
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.GenDecl:
				for _, sp := range d.Specs {
					ts, ok := sp.(*ast.TypeSpec)
					if !ok {
						continue
					}
					switch tt := ts.Type.(type) {
					case *ast.StructType:
						s.classes[ts.Name.Name] = true
						s.fields[ts.Name.Name] = map[string]string{}
						for _, fl := range tt.Fields.List {
							if len(fl.Names) == 0 {
								if st, ok := fl.Type.(*ast.StarExpr); ok {
									s.embeds[ts.Name.Name] = append(s.embeds[ts.Name.Name], exprString(st.X))
								}
								continue
							}
							for _, n := range fl.Names {
								s.fields[ts.Name.Name][n.Name] = exprString(fl.Type)
							}
						}
					case *ast.Ident:
						if tt.Name == "int" {
							s.enums[ts.Name.Name] = true
						}
					}
				}
			case *ast.FuncDecl:
				if d.Recv == nil || len(d.Recv.List) != 1 {
					continue
				}
				recv := strings.TrimPrefix(exprString(d.Recv.List[0].Type), "*")
				var args []stubArg
				for _, fl := range d.Type.Params.List {
					dir := paramDirection(src, fset, f, fl)
					if dir == "" {
						continue // the library's own Action, PercentComplete, Timeout
					}
					for _, n := range fl.Names {
						args = append(args, stubArg{n.Name, stubParam{goType: exprString(fl.Type), in: strings.Contains(dir, "IN"), out: strings.Contains(dir, "OUT")}})
					}
				}
				if s.methods[recv] == nil {
					s.methods[recv] = map[string][]stubArg{}
				}
				s.methods[recv][d.Name.Name] = args
			}
		}
	}
	return s
}

// paramDirection reads the /* IN */, /* OUT */ or /* IN/OUT */ comment the
// generator writes before each parameter ("" for the library's Custom ones).
func paramDirection(src []byte, fset *token.FileSet, f *ast.File, fl *ast.Field) string {
	pos := fset.Position(fl.Pos()).Offset
	for _, cg := range f.Comments {
		for _, c := range cg.List {
			end := fset.Position(c.End()).Offset
			if end <= pos && strings.TrimSpace(string(src[end:pos])) == "" {
				text := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(c.Text, "/*"), "*/"))
				switch text {
				case "IN", "OUT", "IN/OUT":
					return text
				}
				return ""
			}
		}
	}
	return ""
}

func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.StarExpr:
		return "*" + exprString(e.X)
	case *ast.ArrayType:
		return "[]" + exprString(e.Elt)
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	default:
		return fmt.Sprintf("%T", e)
	}
}

// method finds a method on a class or its bases.
func (s *stubSchema) method(class, name string) ([]stubArg, bool) {
	if m, ok := s.methods[class][name]; ok {
		return m, true
	}
	for _, b := range s.embeds[class] {
		if m, ok := s.method(b, name); ok {
			return m, true
		}
	}
	return nil, false
}

// field finds a property on a class or its bases.
func (s *stubSchema) field(class, name string) (string, bool) {
	if t, ok := s.fields[class][name]; ok {
		return t, true
	}
	for _, b := range s.embeds[class] {
		if t, ok := s.field(b, name); ok {
			return t, true
		}
	}
	return "", false
}

// goTypeFits says whether a Go value of type got can be what the stub
// declares: the same scalar, a string for a REF (a class type) or an
// embedded instance, and an unsigned integer for an enum (the stubs type
// enums as int; their CIM width is not in the stub).
func (s *stubSchema) goTypeFits(got, stub string) bool {
	switch {
	case got == stub:
		return true
	case s.classes[stub]:
		return got == "string"
	case s.enums[stub]:
		return got == "uint8" || got == "uint16" || got == "uint32"
	}
	return false
}

// call is one WMI call the provider made.
type call struct {
	kind   string // invoke, query, embed, modify
	class  string
	method string
	in     map[string]string // name → Go type
	out    []string
	props  map[string]string
}

// recorder stands between the provider and the simulator and records calls.
type recorder struct {
	*Sim
	mu    sync.Mutex
	calls []call
}

func classOfPath(p string) string {
	if i := strings.Index(p, ":"); i >= 0 {
		p = p[i+1:]
	}
	if i := strings.IndexByte(p, '.'); i >= 0 {
		p = p[:i]
	}
	return p
}

func typesOf(m map[string]any) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = reflect.TypeOf(v).String()
	}
	return out
}

func (r *recorder) add(c call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
}

func (r *recorder) Invoke(ctx context.Context, path, method string, in map[string]any, out []string) (hyperv.Result, error) {
	r.add(call{kind: "invoke", class: classOfPath(path), method: method, in: typesOf(in), out: out})
	return r.Sim.Invoke(ctx, path, method, in, out)
}

func (r *recorder) Query(ctx context.Context, wql string) ([]hyperv.Object, error) {
	c := call{kind: "query"}
	if m := selectRE.FindStringSubmatch(wql); m != nil {
		c.class = m[1]
		if m[3] != "" {
			c.props = map[string]string{m[3]: ""}
		}
	} else if m := associatorsRE.FindStringSubmatch(wql); m != nil {
		c.class = m[2]
	}
	r.add(c)
	return r.Sim.Query(ctx, wql)
}

func (r *recorder) EmbeddedInstance(ctx context.Context, class string, props map[string]any) (string, error) {
	r.add(call{kind: "embed", class: class, props: typesOf(props)})
	return r.Sim.EmbeddedInstance(ctx, class, props)
}

func (r *recorder) ModifiedInstance(ctx context.Context, path string, props map[string]any) (string, error) {
	r.add(call{kind: "modify", class: classOfPath(path), props: typesOf(props)})
	return r.Sim.ModifiedInstance(ctx, path, props)
}

// providerCalls drives every operation of the provider over the simulator
// and returns the calls it made. Failures are logged, not fatal: a
// misspelled parameter may fail the call, and the schema check says why.
func providerCalls(t *testing.T) []call {
	t.Helper()
	ctx := context.Background()
	s, err := Open("hv-sim", t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := lab.CreateVM(s.dir, "web01", []int64{8 * mib})
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{Sim: s}
	p := hyperv.NewOverWMI(r, hyperv.Options{PollInterval: 5 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	logErr := func(what string, err error) {
		if err != nil {
			t.Logf("%s: %v", what, err)
		}
	}
	_, err = p.Host(ctx)
	logErr("Host", err)
	_, err = p.VMs(ctx)
	logErr("VMs", err)
	cp, err := p.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Name: "replicator j web01", Consistency: provider.ApplicationConsistent})
	logErr("CreateCheckpoint", err)
	rp, err := p.ConvertToReferencePoint(ctx, vm.ID, cp.ID, "")
	logErr("ConvertToReferencePoint", err)
	_ = s.Lab().Write(ctx, "web01", 0, 1, 1)
	cp2, err := p.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{Consistency: provider.CrashConsistent})
	logErr("CreateCheckpoint", err)
	if len(cp2.Disks) > 0 {
		_, err = p.ChangedRanges(ctx, vm.ID, cp2.ID, cp2.Disks[0].DiskID, rp)
		logErr("ChangedRanges", err)
	}
	_, err = p.Checkpoints(ctx, vm.ID)
	logErr("Checkpoints", err)
	_, err = p.ConvertToReferencePoint(ctx, vm.ID, cp2.ID, rp)
	logErr("ConvertToReferencePoint", err)
	cp3, err := p.CreateCheckpoint(ctx, vm.ID, provider.CheckpointOptions{})
	logErr("CreateCheckpoint", err)
	logErr("ReleaseCheckpoint", p.ReleaseCheckpoint(ctx, vm.ID, cp3.ID))
	return r.calls
}

func TestSchemaConformance(t *testing.T) {
	root := wmiModuleDir(t)
	calls := providerCalls(t)
	methods := map[string]bool{}
	for _, c := range calls {
		if c.kind == "invoke" {
			methods[c.method] = true
		}
	}
	// The provider must have reached every method it uses, or the check
	// below proves nothing about the ones it did not reach.
	for _, m := range []string{"CreateSnapshot", "ModifySystemSettings", "ConvertToReferencePoint", "DestroySnapshot", "DestroyReferencePoint", "GetVirtualDiskChanges", "GetVirtualHardDiskSettingData"} {
		if !methods[m] {
			t.Errorf("the provider never called %s", m)
		}
	}
	for _, release := range []string{"server2019", "server23h2"} {
		t.Run(release, func(t *testing.T) {
			s := loadSchema(t, filepath.Join(root, release, "root", "virtualization", "v2"))
			for _, problem := range checkCalls(s, calls) {
				t.Error(problem)
			}
			for _, problem := range checkSignatures(s) {
				t.Error(problem)
			}
		})
	}
}

// checkCalls lists what the stubs do not declare of the calls.
func checkCalls(s *stubSchema, calls []call) []string {
	seen := map[string]bool{}
	var problems []string
	add := func(format string, a ...any) {
		p := fmt.Sprintf(format, a...)
		if !seen[p] {
			seen[p] = true
			problems = append(problems, p)
		}
	}
	for _, c := range calls {
		if c.class == "" {
			add("a query the check cannot read")
			continue
		}
		if !s.classes[c.class] {
			add("class %s does not exist", c.class)
			continue
		}
		switch c.kind {
		case "invoke":
			args, ok := s.method(c.class, c.method)
			if !ok {
				add("%s has no method %s", c.class, c.method)
				continue
			}
			byName := map[string]stubArg{}
			for _, a := range args {
				byName[a.name] = a
			}
			for _, name := range sortedKeys(c.in) {
				a, ok := byName[name]
				if !ok || !a.in {
					add("%s.%s has no in parameter %s", c.class, c.method, name)
					continue
				}
				if !s.goTypeFits(c.in[name], a.goType) {
					add("%s.%s(%s): passed as %s, declared %s", c.class, c.method, name, c.in[name], a.goType)
				}
			}
			for _, name := range c.out {
				if a, ok := byName[name]; !ok || !a.out {
					add("%s.%s has no out parameter %s", c.class, c.method, name)
				}
			}
		case "query", "embed", "modify":
			for _, name := range sortedKeys(c.props) {
				stub, ok := s.field(c.class, name)
				if !ok {
					add("%s has no property %s", c.class, name)
					continue
				}
				if got := c.props[name]; got != "" && !s.goTypeFits(got, stub) {
					add("%s.%s: set as %s, declared %s", c.class, name, got, stub)
				}
			}
		}
	}
	return problems
}

// checkSignatures compares the simulator's declared methods with the stubs.
func checkSignatures(s *stubSchema) []string {
	var problems []string
	for _, name := range sortedKeys(signatures) {
		sig := signatures[name]
		class := sig.class
		if class == classJob {
			class = "Msvm_ConcreteJob"
		}
		args, ok := s.method(class, name)
		if !ok {
			problems = append(problems, fmt.Sprintf("simulator: %s has no method %s", class, name))
			continue
		}
		byName := map[string]stubArg{}
		for _, a := range args {
			byName[a.name] = a
		}
		for _, p := range sig.in {
			a, ok := byName[p.name]
			if !ok || !a.in {
				problems = append(problems, fmt.Sprintf("simulator: %s.%s has no in parameter %s", class, name, p.name))
				continue
			}
			want := map[string]string{"ref": "string", "datetime": "string"}[p.cimType]
			if want == "" {
				want = p.cimType
			}
			if !s.goTypeFits(want, a.goType) {
				problems = append(problems, fmt.Sprintf("simulator: %s.%s(%s) is %s, declared %s", class, name, p.name, p.cimType, a.goType))
			}
		}
		for _, o := range sig.out {
			if a, ok := byName[o]; !ok || !a.out {
				problems = append(problems, fmt.Sprintf("simulator: %s.%s has no out parameter %s", class, name, o))
			}
		}
	}
	return problems
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// A renamed parameter is caught: the check reports it by name.
func TestSchemaCatchesARenamedParameter(t *testing.T) {
	root := wmiModuleDir(t)
	s := loadSchema(t, filepath.Join(root, "server2019", "root", "virtualization", "v2"))
	good := call{kind: "invoke", class: "Msvm_ImageManagementService", method: "GetVirtualDiskChanges",
		in:  map[string]string{"Path": "string", "LimitId": "string", "TargetSnapshotId": "string", "ByteOffset": "uint64", "ByteLength": "uint64"},
		out: []string{"ProcessedByteLength", "ChangedByteOffsets", "ChangedByteLengths", "Job"}}
	if p := checkCalls(s, []call{good}); len(p) != 0 {
		t.Fatalf("the documented call is refused: %v", p)
	}
	bad := good
	bad.in = map[string]string{"Path": "string", "LimitID": "string", "ByteOffset": "uint64", "ByteLength": "uint32"}
	p := strings.Join(checkCalls(s, []call{bad}), "\n")
	for _, want := range []string{"no in parameter LimitID", "ByteLength): passed as uint32, declared uint64"} {
		if !strings.Contains(p, want) {
			t.Errorf("problems %q lack %q", p, want)
		}
	}
	snap := call{kind: "embed", class: "Msvm_VirtualSystemSnapshotSettingData", props: map[string]string{"ConsistencyLvl": "uint16"}}
	if p := checkCalls(s, []call{snap}); len(p) != 1 || !strings.Contains(p[0], "no property ConsistencyLvl") {
		t.Errorf("a misspelled property: %v", p)
	}
}

// propertyReads lists the property names the provider's code reads from WMI
// objects (o.str("X"), o.int("X"), o.strs("X"), o.prop("X")).
func propertyReads(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join("..", e.Name()), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	seen := map[string]bool{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			ce, ok := n.(*ast.CallExpr)
			if !ok || len(ce.Args) != 1 {
				return true
			}
			sel, ok := ce.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			switch sel.Sel.Name {
			case "str", "int", "strs", "prop":
			default:
				return true
			}
			if lit, ok := ce.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if name, err := strconv.Unquote(lit.Value); err == nil {
					seen[name] = true
				}
			}
			return true
		})
	}
	return sortedKeys(seen)
}

// Every property the provider reads exists on a class it reads.
func TestSchemaPropertiesRead(t *testing.T) {
	root := wmiModuleDir(t)
	reads := propertyReads(t)
	if len(reads) < 10 {
		t.Fatalf("found only %d property reads in the provider: %v", len(reads), reads)
	}
	read := []string{classComputerSystem, classSettingData, classStorageAllocation, classResourceAllocation, classReferencePoint,
		"Msvm_ConcreteJob", "Msvm_VirtualHardDiskSettingData", classManagementService,
		// A VM's hardware (VMConfig).
		classProcessorSettings, classMemorySettings, classSyntheticPort, classPortAllocation, classSwitch}
	for _, release := range []string{"server2019", "server23h2"} {
		s := loadSchema(t, filepath.Join(root, release, "root", "virtualization", "v2"))
		for _, name := range reads {
			found := false
			for _, class := range read {
				if _, ok := s.field(class, name); ok {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: the provider reads property %s, which none of %v has", release, name, read)
			}
		}
	}
}
