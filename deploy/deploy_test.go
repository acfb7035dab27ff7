package deploy

import (
	"bufio"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/replicator/replicator/config"
)

// repoRoot is the root of the repository, where docker-compose.yml and the
// Dockerfile stand.
const repoRoot = ".."

// ciBuildMarker is the comment in .ci/run above the Dockerfile's build command.
const ciBuildMarker = "the Dockerfile's build command"

// tlsDir is where the services mount their certificate folder.
const tlsDir = "/etc/replicator/tls"

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image      string      `yaml:"image"`
	Build      any         `yaml:"build"`
	Entrypoint []string    `yaml:"entrypoint"`
	Command    []string    `yaml:"command"`
	Ports      []string    `yaml:"ports"`
	Volumes    []yaml.Node `yaml:"volumes"`
	DependsOn  map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

// mount is one entry of a service's volumes, short or long syntax.
type mount struct {
	Type     string `yaml:"type"`
	Source   string `yaml:"source"`
	Target   string `yaml:"target"`
	ReadOnly bool   `yaml:"read_only"`
	Bind     struct {
		CreateHostPath *bool `yaml:"create_host_path"`
	} `yaml:"bind"`
}

func (m mount) isBind() bool { return m.Type == "bind" }

func parseMounts(t *testing.T, service string, nodes []yaml.Node) []mount {
	t.Helper()
	var out []mount
	for _, n := range nodes {
		var m mount
		switch n.Kind {
		case yaml.ScalarNode:
			parts := strings.Split(n.Value, ":")
			if len(parts) < 2 || len(parts) > 3 {
				t.Fatalf("docker-compose.yml line %d: services.%s.volumes %q: want SOURCE:TARGET[:MODE]", n.Line, service, n.Value)
			}
			m.Source, m.Target = parts[0], parts[1]
			m.ReadOnly = len(parts) == 3 && parts[2] == "ro"
			m.Type = "volume"
			if strings.HasPrefix(m.Source, ".") || strings.HasPrefix(m.Source, "/") {
				m.Type = "bind"
			}
		case yaml.MappingNode:
			if err := n.Decode(&m); err != nil {
				t.Fatalf("docker-compose.yml line %d: services.%s.volumes: %v", n.Line, service, err)
			}
		default:
			t.Fatalf("docker-compose.yml line %d: services.%s.volumes: unexpected entry", n.Line, service)
		}
		out = append(out, m)
	}
	return out
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("docker-compose.yml: no services")
	}
	return c
}

func loadDeployConfig(t *testing.T) *config.Config {
	t.Helper()
	// The environment must not change what the file says.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, config.EnvPrefix+"_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	cfg, err := config.Load(config.LoadOptions{File: "replicator.yaml"})
	if err != nil {
		t.Fatalf("deploy/replicator.yaml: %v", err)
	}
	return cfg
}

// TestConfigLoads checks that the configuration the stack mounts is valid and
// fits the stack: Temporal and the agent by their service names, the
// certificates where the services mount them.
func TestConfigLoads(t *testing.T) {
	cfg := loadDeployConfig(t)
	if cfg.Temporal.Address != "temporal:7233" {
		t.Errorf("temporal.address %q, want the compose service temporal:7233", cfg.Temporal.Address)
	}
	for key, p := range map[string]string{"tls.ca": cfg.TLS.CA, "tls.cert": cfg.TLS.Cert, "tls.key": cfg.TLS.Key,
		"temporal.tls.ca": cfg.Temporal.TLS.CA, "temporal.tls.cert": cfg.Temporal.TLS.Cert, "temporal.tls.key": cfg.Temporal.TLS.Key} {
		if path.Dir(p) != tlsDir {
			t.Errorf("%s %q is not in %s, where the services mount their certificates", key, p, tlsDir)
		}
	}
	if len(cfg.Jobs) == 0 {
		t.Error("no job")
	}
	hasLab := false
	for _, h := range cfg.Hosts {
		hasLab = hasLab || h.Provider == "lab"
	}
	if !hasLab {
		t.Error("no lab host: the stack cannot be tried without Hyper-V")
	}
	if _, _, err := net.SplitHostPort(cfg.Agent.Listen); err != nil || !strings.HasPrefix(cfg.Agent.Listen, "0.0.0.0:") {
		t.Errorf("agent.listen %q: the agent must listen on all interfaces of its container (%v)", cfg.Agent.Listen, err)
	}
}

// workersFlags reads the flags the workers command defines, from its source:
// name → whether the flag is boolean. The keys of the configuration are
// flags too (config.AddFlags).
func workersFlags(t *testing.T) (flags map[string]bool, roles []string) {
	t.Helper()
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, filepath.Join(repoRoot, "workers", "main.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	flags = map[string]bool{}
	for _, k := range config.OverrideKeys() {
		flags[k] = false
	}
	ast.Inspect(file, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); !ok || id.Name != "fs" {
				return true
			}
			for _, arg := range n.Args {
				if lit, ok := arg.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					name, _ := strconv.Unquote(lit.Value)
					flags[name] = strings.HasPrefix(sel.Sel.Name, "Bool")
					break
				}
			}
		case *ast.FuncDecl:
			if n.Name.Name != "parseRoles" {
				return true
			}
			ast.Inspect(n, func(m ast.Node) bool {
				if cc, ok := m.(*ast.CaseClause); ok {
					for _, e := range cc.List {
						if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							if r, _ := strconv.Unquote(lit.Value); r != "" {
								roles = append(roles, r)
							}
						}
					}
				}
				return true
			})
			return false
		}
		return true
	})
	for _, f := range []string{"config", "roles"} {
		if _, ok := flags[f]; !ok {
			t.Fatalf("workers/main.go defines no --%s flag (found %v)", f, flags)
		}
	}
	if len(roles) == 0 {
		t.Fatal("workers/main.go: no roles found in parseRoles")
	}
	return flags, roles
}

// parseWorkersArgs checks args against the flags of workers and returns the
// value of each flag.
func parseWorkersArgs(args []string, flags map[string]bool) (map[string]string, error) {
	values := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			return nil, fmt.Errorf("argument %q: workers takes no positional arguments", a)
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		isBool, ok := flags[name]
		if !ok {
			return nil, fmt.Errorf("workers has no flag --%s", name)
		}
		if !hasValue {
			if isBool {
				value = "true"
			} else {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("--%s needs a value", name)
				}
				i++
				value = args[i]
			}
		}
		values[name] = value
	}
	return values, nil
}

// TestComposeServices checks docker-compose.yml against the repository: every
// file it mounts exists, the services built from the Dockerfile run workers
// with flags it defines and the configuration it mounts, and between them
// run every role.
func TestComposeServices(t *testing.T) {
	c := loadCompose(t)
	cfg := loadDeployConfig(t)
	flags, knownRoles := workersFlags(t)

	for _, want := range []string{"postgresql", "temporal", "temporal-ui", "jobs", "proxy", "agent"} {
		if _, ok := c.Services[want]; !ok {
			t.Errorf("docker-compose.yml: no service %s", want)
		}
	}
	// On loopback unless told otherwise: whoever reaches the UI can start workflows.
	if ui := c.Services["temporal-ui"]; !slices.Contains(ui.Ports, "${REPLICATOR_UI_BIND:-127.0.0.1}:8233:8080") {
		t.Errorf("temporal-ui publishes %v, want ${REPLICATOR_UI_BIND:-127.0.0.1}:8233:8080 (the UI's port of --dev, on loopback by default)", ui.Ports)
	}

	rolesRun := map[string]bool{}
	for name, s := range c.Services {
		mounts := parseMounts(t, name, s.Volumes)
		mountTargets := map[string]mount{}
		for _, m := range mounts {
			mountTargets[m.Target] = m
			switch {
			case m.isBind():
				src := filepath.Join(repoRoot, filepath.FromSlash(m.Source))
				if strings.HasPrefix(path.Clean(m.Source), "deploy/tls/") {
					// Made by `starter pki issue`; never in the repository.
					if m.Bind.CreateHostPath == nil || *m.Bind.CreateHostPath {
						t.Errorf("service %s mounts %s without create_host_path: false: a missing certificate folder would be created empty", name, m.Source)
					}
					if !m.ReadOnly {
						t.Errorf("service %s mounts %s writable", name, m.Source)
					}
					continue
				}
				if _, err := os.Stat(src); err != nil {
					t.Errorf("service %s mounts %s, which is not in the repository: %v", name, m.Source, err)
				}
				if !m.ReadOnly {
					t.Errorf("service %s mounts %s writable; files of the repository are mounted read-only", name, m.Source)
				}
			case m.Type == "volume":
				if _, ok := c.Volumes[m.Source]; !ok {
					t.Errorf("service %s mounts volume %s, which volumes does not declare", name, m.Source)
				}
			default:
				t.Errorf("service %s: mount %+v of type %q", name, m, m.Type)
			}
		}
		for dep := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("service %s depends on %s, which does not exist", name, dep)
			}
		}
		if len(s.Entrypoint) > 0 {
			// A script run by a shell: it must be mounted and be valid sh.
			script := s.Entrypoint[len(s.Entrypoint)-1]
			m, ok := mountTargets[script]
			if !ok {
				t.Errorf("service %s runs %s, which it does not mount", name, script)
				continue
			}
			if out, err := exec.Command("sh", "-n", filepath.Join(repoRoot, m.Source)).CombinedOutput(); err != nil {
				t.Errorf("service %s: %s is not valid sh: %v\n%s", name, m.Source, err, out)
			}
		}
		if s.Build == nil {
			continue
		}

		// Built from the repository's Dockerfile, whose entrypoint is workers.
		if s.Build != "." {
			t.Errorf("service %s builds %v, want the repository root (.)", name, s.Build)
		}
		values, err := parseWorkersArgs(s.Command, flags)
		if err != nil {
			t.Errorf("service %s command %q: %v", name, s.Command, err)
			continue
		}
		cfgPath := values["config"]
		m, ok := mountTargets[cfgPath]
		switch {
		case cfgPath == "":
			t.Errorf("service %s runs workers without --config", name)
		case !ok:
			t.Errorf("service %s reads --config %s, which it does not mount", name, cfgPath)
		case path.Clean(m.Source) != "deploy/replicator.yaml" || !m.ReadOnly:
			t.Errorf("service %s mounts %s at %s (read-only %v), want deploy/replicator.yaml read-only", name, m.Source, cfgPath, m.ReadOnly)
		}
		if _, ok := mountTargets[tlsDir]; !ok {
			t.Errorf("service %s mounts no certificate folder at %s", name, tlsDir)
		}
		roles := strings.Split(values["roles"], ",")
		if values["roles"] == "" {
			t.Errorf("service %s runs workers without --roles", name)
		}
		for _, r := range roles {
			if !slices.Contains(knownRoles, r) {
				t.Errorf("service %s: --roles names %q; workers knows %v", name, r, knownRoles)
			}
			rolesRun[r] = true
		}
		if slices.Contains(roles, "target") {
			if _, ok := mountTargets[cfg.Agent.Datastore]; !ok {
				t.Errorf("service %s runs the target role but mounts no volume at agent.datastore %s", name, cfg.Agent.Datastore)
			}
			for _, tg := range cfg.Targets {
				if tg.Name != cfg.Agent.Name {
					continue
				}
				host, port, err := net.SplitHostPort(tg.Address)
				_, listenPort, _ := net.SplitHostPort(cfg.Agent.Listen)
				if err != nil || host != name || port != listenPort {
					t.Errorf("targets %s address %q: want %s:%s, the agent's service and agent.listen port", tg.Name, tg.Address, name, listenPort)
				}
			}
		}
		if slices.Contains(roles, "proxy") {
			for _, h := range cfg.Hosts {
				if h.Provider != "lab" {
					continue
				}
				if _, ok := mountTargets[h.Path]; !ok {
					t.Errorf("service %s runs the proxy of lab host %s but mounts no volume at %s", name, h.Name, h.Path)
				}
			}
		}
	}
	for _, r := range knownRoles {
		if !rolesRun[r] {
			t.Errorf("no service runs the %s role", r)
		}
	}
}

// TestTemporalImages checks that the server and its admin tools (which set up
// the schema the server expects) are the same release, the one go.mod builds
// --dev with.
func TestTemporalImages(t *testing.T) {
	c := loadCompose(t)
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var serverVersion string
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "go.temporal.io/server" {
			serverVersion = strings.TrimPrefix(f[1], "v")
		}
	}
	if serverVersion == "" {
		t.Fatal("go.mod requires no go.temporal.io/server")
	}
	minor := func(v string) string {
		parts := strings.SplitN(v, ".", 3)
		if len(parts) < 2 {
			return v
		}
		return parts[0] + "." + parts[1]
	}
	tags := map[string]string{}
	for name, s := range c.Services {
		repo, tag, _ := strings.Cut(s.Image, ":")
		if repo == "temporalio/server" || repo == "temporalio/admin-tools" {
			if tag == "" || tag == "latest" {
				t.Errorf("service %s: image %s has no pinned version", name, s.Image)
			}
			tags[repo] = tag
		}
		if repo == "temporalio/auto-setup" {
			t.Errorf("service %s uses temporalio/auto-setup, which is no longer published", name)
		}
	}
	if tags["temporalio/server"] == "" || tags["temporalio/server"] != tags["temporalio/admin-tools"] {
		t.Errorf("temporalio/server:%s and temporalio/admin-tools:%s must be the same release", tags["temporalio/server"], tags["temporalio/admin-tools"])
	}
	if minor(tags["temporalio/server"]) != minor(serverVersion) {
		t.Errorf("temporalio/server:%s is not the %s release of go.mod's go.temporal.io/server v%s", tags["temporalio/server"], minor(serverVersion), serverVersion)
	}
	var dyn map[string]any
	data, err := os.ReadFile("temporal/dynamicconfig.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &dyn); err != nil {
		t.Fatalf("temporal/dynamicconfig.yaml: %v", err)
	}
}

// dockerfileInstructions returns the Dockerfile's instructions with their
// continuation lines joined.
func dockerfileInstructions(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		out = append(out, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// buildCommand normalises a go build command line: without RUN's --mount
// options and without -o and its argument, which differ between the image
// (a folder) and CI (/dev/null).
func buildCommand(line string) []string {
	var out []string
	fields := strings.Fields(line)
	for i := 0; i < len(fields); i++ {
		switch f := fields[i]; {
		case f == "RUN" && i == 0, strings.HasPrefix(f, "--mount="):
		case f == "-o":
			i++
		case strings.HasPrefix(f, "-o="):
		default:
			out = append(out, f)
		}
	}
	return out
}

// TestDockerfileBuildIsCI checks that the Dockerfile builds the binaries with
// the command that .ci/run executes, so that a green CI means the image's
// build step compiles; and that the image runs workers as a non-root user.
func TestDockerfileBuildIsCI(t *testing.T) {
	var builds []string
	var entrypoint, user string
	var froms []string
	for _, ins := range dockerfileInstructions(t) {
		word, rest, _ := strings.Cut(ins, " ")
		switch strings.ToUpper(word) {
		case "RUN":
			if strings.Contains(rest, "go build") {
				builds = append(builds, ins)
			}
		case "ENTRYPOINT":
			entrypoint = rest
		case "USER":
			user = rest
		case "FROM":
			froms = append(froms, rest)
		}
	}
	if len(builds) != 1 {
		t.Fatalf("Dockerfile: %d RUN instructions with go build, want 1: %q", len(builds), builds)
	}
	if entrypoint != `["/usr/local/bin/workers"]` {
		t.Errorf("Dockerfile ENTRYPOINT %s, want [\"/usr/local/bin/workers\"]", entrypoint)
	}
	if user == "" || strings.HasPrefix(user, "root") || strings.HasPrefix(user, "0") {
		t.Errorf("Dockerfile USER %q: the image must not run as root", user)
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "golang:1.26") {
		t.Errorf("Dockerfile stages %q: want a golang:1.26 builder and a runtime stage", froms)
	}

	image := buildCommand(builds[0])
	if !slices.Contains(image, "CGO_ENABLED=0") {
		t.Errorf("Dockerfile builds with %q: want CGO_ENABLED=0 (static binaries for the slim image)", image)
	}
	var pkgs []string
	for _, f := range image {
		if strings.HasPrefix(f, "./") {
			pkgs = append(pkgs, f)
		}
	}
	for _, want := range []string{"./workers", "./starter"} {
		if !slices.Contains(pkgs, want) {
			t.Errorf("Dockerfile builds %v, not %s", pkgs, want)
		}
	}
	for _, p := range pkgs {
		if name, err := packageName(filepath.Join(repoRoot, p)); err != nil || name != "main" {
			t.Errorf("Dockerfile builds %s: package %q (%v), want a command", p, name, err)
		}
	}

	ci, err := os.ReadFile(filepath.Join(repoRoot, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(ci), "\n")
	var ciCommand []string
	for i, line := range lines {
		if strings.HasPrefix(strings.TrimSpace(line), "#") && strings.Contains(line, ciBuildMarker) {
			for _, next := range lines[i+1:] {
				if next = strings.TrimSpace(next); next != "" && !strings.HasPrefix(next, "#") {
					ciCommand = buildCommand(next)
					break
				}
			}
		}
	}
	if ciCommand == nil {
		t.Fatalf(".ci/run has no command under a comment %q", ciBuildMarker)
	}
	if !slices.Equal(ciCommand, image) {
		t.Errorf(".ci/run builds %q, the Dockerfile %q (apart from -o): CI must run the image's build command", ciCommand, image)
	}
}

// TestImageLeavesOutEmbeddedServer checks that the image's binaries, built
// with the Dockerfile's build tags, link no package of the Temporal server
// (the embedded server is for `workers --dev` only), while the default build
// of workers still does, so that `go run ./workers --dev` keeps working.
func TestImageLeavesOutEmbeddedServer(t *testing.T) {
	var image []string
	for _, ins := range dockerfileInstructions(t) {
		if strings.HasPrefix(ins, "RUN ") && strings.Contains(ins, "go build") {
			image = buildCommand(ins)
		}
	}
	tags := ""
	for i, f := range image {
		if f == "-tags" && i+1 < len(image) {
			tags = image[i+1]
		} else if v, ok := strings.CutPrefix(f, "-tags="); ok {
			tags = v
		}
	}
	if !slices.Contains(strings.Split(tags, ","), "nodev") {
		t.Fatalf("Dockerfile builds with %q: want -tags nodev, which leaves the embedded Temporal server out", image)
	}
	serverPackages := func(tags string) []string {
		t.Helper()
		args := []string{"list", "-deps"}
		if tags != "" {
			args = append(args, "-tags", tags)
		}
		cmd := exec.Command("go", append(args, "./workers", "./starter")...)
		cmd.Dir = repoRoot
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s: %v", strings.Join(args, " "), err)
		}
		var found []string
		for _, p := range strings.Fields(string(out)) {
			if p == "go.temporal.io/server" || strings.HasPrefix(p, "go.temporal.io/server/") {
				found = append(found, p)
			}
		}
		return found
	}
	if found := serverPackages(tags); len(found) > 0 {
		t.Errorf("with -tags %s, workers and starter link %d packages of the Temporal server, e.g. %s", tags, len(found), found[0])
	}
	if found := serverPackages(""); len(found) == 0 {
		t.Errorf("the default build of workers links no Temporal server package: `workers --dev` has lost its embedded server")
	}

	// The image's workers refuse --dev with a message, and start nothing.
	bin := filepath.Join(t.TempDir(), "workers")
	build := exec.Command("go", "build", "-tags", tags, "-o", bin, "./workers")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags %s ./workers: %v\n%s", tags, err, out)
	}
	dataDir := filepath.Join(t.TempDir(), "dev")
	out, err := exec.Command(bin, "--dev", "--data-dir", dataDir).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "--dev is not part of this build") || !strings.Contains(string(out), "-tags nodev") {
		t.Errorf("workers --dev built with -tags %s: %v, output %q; want exit 2 saying --dev is not part of this build", tags, err, out)
	}
	if _, err := os.Stat(dataDir); err == nil {
		t.Errorf("workers --dev built with -tags %s created %s", tags, dataDir)
	}
}

// packageName is the package clause of the Go files in dir.
func packageName(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, e.Name()), nil, parser.PackageClauseOnly)
		if err != nil {
			return "", err
		}
		return f.Name.Name, nil
	}
	return "", errors.New("no Go files")
}

// TestSecretsStayOut checks that the certificates made for the stack (with
// the CA key) are kept out of the image's build context and out of git.
func TestSecretsStayOut(t *testing.T) {
	for _, file := range []string{".dockerignore", ".gitignore"} {
		data, err := os.ReadFile(filepath.Join(repoRoot, file))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "/"), "/")
			found = found || line == "deploy/tls"
		}
		if !found {
			t.Errorf("%s does not exclude deploy/tls, where `starter pki` writes the CA key", file)
		}
	}
}
