//go:build linux

package topology

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.yaml.in/yaml/v3"

	"github.com/replicator/replicator/internal/freeport"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/testkit"
)

// repoRoot is the root of the repository, where docker-compose.yml stands.
const repoRoot = "../.."

// temporalRelease is the Temporal server release the tools must be built at:
// the one go.mod pins (and docker-compose.yml's images are).
func temporalRelease(t *testing.T) string {
	t.Helper()
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "go.temporal.io/server" {
			return f[1]
		}
	}
	t.Fatal("go.mod requires no go.temporal.io/server")
	return ""
}

// tools are the outside programs of the topology.
type tools struct {
	pgBin     string // folder of initdb, postgres, pg_isready
	server    string // go.temporal.io/server/cmd/server
	sqlTool   string // go.temporal.io/server/cmd/tools/sql, which the images call temporal-sql-tool
	cli       string // the Temporal CLI, github.com/temporalio/cli/cmd/temporal
	ui        string // the Web UI server, github.com/temporalio/ui-server/v2/cmd/server
	uiConfig  string // its config/docker.yaml, which the temporalio/ui image runs
	schemaDir string // schema/postgresql/v12 of the server module
	workers   string
	starter   string
	binDir    string // temporal-sql-tool and temporal, as the scripts call them
}

// goInstalled finds a program built by `go install` (on PATH, or in
// GOPATH/bin) and checks the module version it was built from.
func goInstalled(t *testing.T, name, module, version, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		out, _ := exec.Command("go", "env", "GOPATH").Output()
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			if c := filepath.Join(dir, "bin", name); fileExists(c) {
				p, err = c, nil
				break
			}
		}
	}
	if err != nil {
		testkit.Precondition(t, "%s is not installed (%s; .ci/run does it)", name, install)
	}
	out, err := exec.Command("go", "version", "-m", p).Output()
	if err != nil {
		t.Fatalf("go version -m %s: %v", p, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "mod" && f[1] == module {
			if f[2] != version {
				testkit.Precondition(t, "%s is %s %s, want %s (%s)", p, module, f[2], version, install)
			}
			return p
		}
	}
	testkit.Precondition(t, "%s is not built from %s (%s)", p, module, install)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// findTools locates PostgreSQL, the Temporal programs and the schema, and
// builds workers and starter into dir.
func findTools(t *testing.T, dir string) tools {
	t.Helper()
	var tl tools
	for _, c := range append([]string{lookDir("initdb")}, globDesc("/usr/lib/postgresql/*/bin")...) {
		if c != "" && fileExists(filepath.Join(c, "initdb")) && fileExists(filepath.Join(c, "postgres")) {
			tl.pgBin = c
			break
		}
	}
	if tl.pgBin == "" {
		testkit.Precondition(t, "PostgreSQL (initdb, postgres) is not installed: apt-get install postgresql (.ci/run does it)")
	}
	release := temporalRelease(t)
	tl.server = goInstalled(t, "server", "go.temporal.io/server", release, "go install go.temporal.io/server/cmd/server@"+release)
	tl.sqlTool = goInstalled(t, "sql", "go.temporal.io/server", release, "go install go.temporal.io/server/cmd/tools/sql@"+release)
	tl.cli = goInstalled(t, "temporal", "github.com/temporalio/cli", cliRelease, "go install github.com/temporalio/cli/cmd/temporal@"+cliRelease)
	uiRelease := moduleVersion(t, uiModule)
	tl.ui = goInstalled(t, "temporal-ui/server", uiModule, uiRelease,
		"GOBIN=$(go env GOPATH)/bin/temporal-ui go install "+uiModule+"/cmd/server@"+uiRelease)
	tl.uiConfig = filepath.Join(moduleDir(t, uiModule), "config", "docker.yaml")

	tl.schemaDir = filepath.Join(moduleDir(t, "go.temporal.io/server"), "schema", "postgresql", "v12")
	if !fileExists(filepath.Join(tl.schemaDir, "temporal", "versioned")) {
		t.Fatalf("no PostgreSQL schema in %s", tl.schemaDir)
	}

	tl.binDir = filepath.Join(dir, "bin")
	if err := os.MkdirAll(tl.binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"temporal-sql-tool": tl.sqlTool, "temporal": tl.cli} {
		if err := os.Symlink(target, filepath.Join(tl.binDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// The binaries of the image: built as the Dockerfile builds them, without
	// the embedded server of --dev.
	build := exec.Command("go", "build", "-tags", "nodev", "-o", tl.binDir+"/", "./workers", "./starter")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags nodev ./workers ./starter: %v\n%s", err, out)
	}
	tl.workers, tl.starter = filepath.Join(tl.binDir, "workers"), filepath.Join(tl.binDir, "starter")
	return tl
}

// uiModule is the Web UI server's module, which go.mod pins for --dev.
const uiModule = "github.com/temporalio/ui-server/v2"

// moduleDir and moduleVersion are a module of go.mod, in the module cache.
func moduleDir(t *testing.T, module string) string { return goList(t, "{{.Dir}}", module) }

func moduleVersion(t *testing.T, module string) string { return goList(t, "{{.Version}}", module) }

func goList(t *testing.T, format, module string) string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", format, module)
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go list -m %s: %v", module, err)
	}
	return strings.TrimSpace(string(out))
}

// cliRelease is the Temporal CLI that .ci/run installs.
const cliRelease = "v1.5.1"

func lookDir(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	return filepath.Dir(p)
}

func globDesc(pattern string) []string {
	m, _ := filepath.Glob(pattern)
	sort.Sort(sort.Reverse(sort.StringSlice(m)))
	return m
}

// freePort is a free loopback port below the ephemeral range (package
// freeport), so that no outgoing connection takes it first.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := freeport.Port("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// freeServerPort is a free loopback port below 32768: the server records
// its membership port in a PostgreSQL smallint (cluster_membership.rpc_port),
// which the kernel's ephemeral ports overflow. freeport's ports are below
// the ephemeral range, which starts at 32768 or higher.
func freeServerPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		port := freePort(t)
		if port < 32768 {
			return port
		}
	}
	t.Fatal("no free port below 32768")
	return 0
}

// proc is one process of the topology, with its folder and log.
type proc struct {
	t    *testing.T
	name string
	dir  string // its data folder and working directory
	args []string
	env  []string
	cred *syscall.Credential
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newProc(t *testing.T, name, dir string, env []string, args ...string) *proc {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, dir: dir, args: args, env: env, log: filepath.Join(dir, name+".log")}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- last lines of %s:\n%s", p.log, tail(p.log, 40))
		}
	})
	return p
}

// start starts the process; it dies with the test process (SIGKILL).
func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.args, " "))
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = p.dir, p.env, f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: p.cred}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// signal sends sig and waits until the process has exited.
func (p *proc) signal(sig syscall.Signal, limit time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(limit):
		p.t.Errorf("%s did not exit %s after %v; killing it", p.name, limit, sig)
		cmd.Process.Kill()
		<-done
	}
}

// kill ends the process with SIGKILL, as a crash or a power cut would.
func (p *proc) kill() { p.signal(syscall.SIGKILL, time.Minute) }

func (p *proc) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitLog waits until the process's log, since its latest start, has a line
// matching re.
func (p *proc) waitLog(re string, limit time.Duration) {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(limit)
	for {
		b, _ := os.ReadFile(p.log)
		if i := bytes.LastIndex(b, []byte("\n=== ")); i >= 0 {
			b = b[i:]
		}
		if rx.Match(b) {
			return
		}
		if p.exited() {
			p.t.Fatalf("%s exited before logging %q:\n%s", p.name, re, tail(p.log, 40))
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not log %q in %s:\n%s", p.name, re, limit, tail(p.log, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	all = all[max(0, len(all)-lines):]
	for i, l := range all {
		if len(l) > 400 {
			all[i] = l[:400] + "…"
		}
	}
	return strings.Join(all, "\n")
}

// run runs a one-shot command to its end, failing the test with its output.
func run(t *testing.T, dir string, env []string, cred *syscall.Credential, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// postgres is a private PostgreSQL cluster: its own folder, a loopback
// port, password authentication over TCP, as the postgres image sets it up
// (POSTGRES_USER is the superuser Temporal's schema tool creates the
// databases with).
type postgres struct {
	t        *testing.T
	dir      string
	port     int
	user     string
	password string
	proc     *proc
}

// unprivileged is who the database runs as: PostgreSQL refuses to run as
// root, so under root (CI) it runs as the system's "nobody".
func unprivileged(t *testing.T) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("running as root, PostgreSQL needs an unprivileged user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

func startPostgres(t *testing.T, tl tools, user string) *postgres {
	t.Helper()
	// Not under t.TempDir: its parents are private to the test's user, and
	// the server's user must reach its folder.
	dir, err := os.MkdirTemp("", "replicator-topology-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pg := &postgres{t: t, dir: dir, port: freePort(t), user: user, password: randomHex(t)}
	cred := unprivileged(t)
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte(pg.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		for _, p := range []string{dir, filepath.Join(dir, "password")} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}
	run(t, dir, env, cred, filepath.Join(tl.pgBin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", user,
		"--pwfile", filepath.Join(dir, "password"), "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--locale=C")
	os.Remove(filepath.Join(dir, "password"))
	pg.proc = newProc(t, "postgres", dir, env, filepath.Join(tl.pgBin, "postgres"), "-D", filepath.Join(dir, "data"),
		"-c", "listen_addresses=127.0.0.1", "-p", strconv.Itoa(pg.port), "-c", "unix_socket_directories="+dir)
	pg.proc.cred = cred
	pg.start(tl)
	return pg
}

func (pg *postgres) start(tl tools) {
	pg.t.Helper()
	pg.proc.start()
	pg.proc.waitLog("database system is ready to accept connections", 2*time.Minute)
}

// restart stops the server with a fast shutdown (SIGINT: sessions are
// ended, what is committed stays) and starts it again on the same port.
func (pg *postgres) restart(tl tools, down time.Duration) {
	pg.t.Helper()
	pg.proc.signal(syscall.SIGINT, 2*time.Minute)
	time.Sleep(down)
	pg.start(tl)
}

func randomHex(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// compose is the part of docker-compose.yml the topology takes its commands
// and environment from.
type compose struct {
	Services map[string]struct {
		Command     []string          `yaml:"command"`
		Entrypoint  []string          `yaml:"entrypoint"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []yaml.Node       `yaml:"volumes"`
		Deploy      struct {
			Replicas int `yaml:"replicas"`
		} `yaml:"deploy"`
	} `yaml:"services"`
}

func loadCompose(t *testing.T) compose {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// mounts returns a service's bind mounts: the path in the container and
// the path in the repository.
func (c compose) mounts(t *testing.T, service string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range c.Services[service].Volumes {
		var src, dst string
		switch n.Kind {
		case yaml.ScalarNode:
			parts := strings.Split(n.Value, ":")
			src, dst = parts[0], parts[1]
		case yaml.MappingNode:
			var m struct{ Source, Target string }
			if err := n.Decode(&m); err != nil {
				t.Fatal(err)
			}
			src, dst = m.Source, m.Target
		}
		if strings.HasPrefix(src, "./") {
			out[dst] = strings.TrimPrefix(src, "./")
		}
	}
	return out
}

// imageDefault are the variables the compose file leaves at the image's
// defaults (its ports, the paths it mounts files at, the tools on its PATH),
// which a test on one machine must set.
var imageDefault = map[string]bool{
	"PATH": true, "SCHEMA_DIR": true, "DYNAMIC_CONFIG_FILE_PATH": true, "TEMPORAL_UI_PORT": true,
	"FRONTEND_GRPC_PORT": true, "FRONTEND_HTTP_PORT": true, "FRONTEND_MEMBERSHIP_PORT": true,
	"MATCHING_GRPC_PORT": true, "MATCHING_MEMBERSHIP_PORT": true, "HISTORY_GRPC_PORT": true,
	"HISTORY_MEMBERSHIP_PORT": true, "WORKER_GRPC_PORT": true, "WORKER_MEMBERSHIP_PORT": true,
}

var composeVar = regexp.MustCompile(`\$\{([A-Z_]+):-([^}]*)\}`)

// environment is what a compose service's environment becomes outside
// Docker: every variable as the compose file sets it, except those of site,
// which the test sets (addresses, ports, passwords, which differ from one
// deployment to the next); paths under the service's mounts are the mounted
// files' paths here, where local maps a repository path (deploy/tls/… are
// made by the test, the others are the repository's files).
func (c compose) environment(t *testing.T, service string, site map[string]string, local func(repoPath string) string) []string {
	t.Helper()
	s, ok := c.Services[service]
	if !ok {
		t.Fatalf("docker-compose.yml has no service %s", service)
	}
	mounts := c.mounts(t, service)
	env := map[string]string{"PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME")}
	for k, v := range s.Environment {
		v = composeVar.ReplaceAllString(v, "$2")
		for dst, src := range mounts {
			if v == dst || strings.HasPrefix(v, dst+"/") {
				v = local(src) + strings.TrimPrefix(v, dst)
			}
		}
		env[k] = v
	}
	for k, v := range site {
		// A site value replaces the compose file's; only what the image
		// leaves at its default (ports, mounted paths) may be added.
		if _, ok := s.Environment[k]; !ok && !imageDefault[k] {
			t.Fatalf("docker-compose.yml: service %s does not set %s, which a deployment sets for its site", service, k)
		}
		env[k] = v
	}
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// cluster is PostgreSQL and the Temporal server on it, set up by the compose
// file's steps, with the certificates of every party.
type cluster struct {
	t        *testing.T
	dir      string
	tools    tools
	compose  compose
	pg       *postgres
	temporal *proc
	ui       *proc
	uiURL    string
	frontend string // host:port of the frontend
	certs    string // the private CA's folder; certs/NAME/ per party
}

// local maps a file of the repository that a compose service mounts to the
// file this cluster uses: certificates from the test's CA, the rest as is.
func (cl *cluster) local(repoPath string) string {
	if rest, ok := strings.CutPrefix(repoPath, "deploy/tls/"); ok {
		return filepath.Join(cl.certs, rest)
	}
	abs, err := filepath.Abs(filepath.Join(repoRoot, repoPath))
	if err != nil {
		cl.t.Fatal(err)
	}
	return abs
}

// pkiCommands are the `go run ./starter pki …` lines of README's
// "Deploying" block, as argument lists after `go run ./starter`, trailing
// comments dropped. docker-compose.yml's header must give the same lines.
func pkiCommands(t *testing.T) [][]string {
	t.Helper()
	const prefix = "go run ./starter pki "
	commands := func(file, heading, linePrefix string) [][]string {
		b, err := os.ReadFile(filepath.Join(repoRoot, file))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if heading != "" {
			start := strings.Index(text, heading)
			if start < 0 {
				t.Fatalf("%s has no %q", file, heading)
			}
			text = text[start:]
			if end := strings.Index(text[1:], "\n### "); end >= 0 {
				text = text[:end+1]
			}
		}
		var out [][]string
		for line := range strings.Lines(text) {
			line, ok := strings.CutPrefix(strings.TrimSpace(line), linePrefix)
			if !ok {
				continue
			}
			line, _, _ = strings.Cut(strings.TrimSpace(line), " #")
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				out = append(out, append([]string{"pki"}, strings.Fields(rest)...))
			}
		}
		if len(out) == 0 {
			t.Fatalf("%s gives no %q commands", file, prefix)
		}
		return out
	}
	readme := commands("README.md", "### Deploying", "")
	if header := commands("docker-compose.yml", "", "#"); !reflect.DeepEqual(readme, header) {
		t.Fatalf("docker-compose.yml's header issues the certificates with\n%q\nREADME's \"Deploying\" with\n%q", header, readme)
	}
	return readme
}

// issueCertificates runs README's `starter pki` commands with the test's
// starter, into the test's CA folder instead of deploy/tls, and checks that
// they issue every certificate folder a compose service mounts. extraHosts
// adds --host values per folder: how the parties reach each other here.
func (cl *cluster) issueCertificates(extraHosts map[string][]string) {
	t := cl.t
	t.Helper()
	issued := map[string]bool{}
	for _, args := range pkiCommands(t) {
		for i, a := range args {
			if a == "deploy/tls" {
				args[i] = cl.certs
			}
		}
		if len(args) >= 4 && args[1] == "issue" {
			issued[args[3]] = true
			for _, h := range extraHosts[args[3]] {
				args = append(args, "--host", h)
			}
		}
		run(t, cl.dir, os.Environ(), nil, append([]string{cl.tools.starter}, args...)...)
	}
	for svc := range cl.compose.Services {
		for _, src := range cl.compose.mounts(t, svc) {
			if name, ok := strings.CutPrefix(src, "deploy/tls/"); ok && !issued[name] {
				t.Fatalf("docker-compose.yml: service %s mounts %s, which README's `starter pki issue` commands do not make", svc, src)
			}
		}
	}
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	cl := &cluster{t: t, dir: t.TempDir(), compose: loadCompose(t)}
	cl.tools = findTools(t, cl.dir)
	cl.certs = filepath.Join(cl.dir, "tls")
	// As README and docker-compose.yml's comments issue them; the agent is
	// named as the proxies dial it here: by the link's address.
	agentCerts := strings.TrimPrefix(cl.compose.mounts(t, "agent")["/etc/replicator/tls"], "deploy/tls/")
	cl.issueCertificates(map[string][]string{agentCerts: {"127.0.0.1"}})

	pgEnv := cl.compose.Services["postgresql"].Environment
	cl.pg = startPostgres(t, cl.tools, pgEnv["POSTGRES_USER"])

	// temporal-schema, twice: compose runs it at every `up`.
	schemaEnv := cl.compose.environment(t, "temporal-schema", map[string]string{
		"POSTGRES_SEEDS": "127.0.0.1", "DB_PORT": strconv.Itoa(cl.pg.port), "SQL_PASSWORD": cl.pg.password,
		"SCHEMA_DIR": cl.tools.schemaDir, "PATH": cl.tools.binDir + ":" + os.Getenv("PATH"),
	}, cl.local)
	script := cl.compose.Services["temporal-schema"].Entrypoint
	for range 2 {
		out := run(t, cl.dir, schemaEnv, nil, "sh", cl.local(cl.compose.mounts(t, "temporal-schema")[script[len(script)-1]]))
		if !strings.Contains(out, "Temporal schemas are up to date") {
			t.Fatalf("temporal-schema:\n%s", out)
		}
	}

	ports := map[string]string{}
	for _, k := range []string{"FRONTEND_GRPC_PORT", "FRONTEND_HTTP_PORT", "FRONTEND_MEMBERSHIP_PORT", "MATCHING_GRPC_PORT",
		"MATCHING_MEMBERSHIP_PORT", "HISTORY_GRPC_PORT", "HISTORY_MEMBERSHIP_PORT", "WORKER_GRPC_PORT", "WORKER_MEMBERSHIP_PORT"} {
		ports[k] = strconv.Itoa(freeServerPort(t))
	}
	site := map[string]string{
		"POSTGRES_SEEDS": "127.0.0.1", "DB_PORT": strconv.Itoa(cl.pg.port), "POSTGRES_PWD": cl.pg.password,
		"BIND_ON_IP": "127.0.0.1",
		// The image's default path, where compose mounts the file.
		"DYNAMIC_CONFIG_FILE_PATH": cl.local(cl.compose.mounts(t, "temporal")["/etc/temporal/config/dynamicconfig/docker.yaml"]),
	}
	for k, v := range ports {
		site[k] = v
	}
	serverEnv := cl.compose.environment(t, "temporal", site, cl.local)
	for _, want := range []string{"TEMPORAL_TLS_FRONTEND_CERT", "TEMPORAL_TLS_REQUIRE_CLIENT_AUTH=true", "DB=postgres12"} {
		if !slices.ContainsFunc(serverEnv, func(kv string) bool { return strings.HasPrefix(kv, want) }) {
			t.Fatalf("docker-compose.yml: the temporal service does not set %s", want)
		}
	}
	cl.frontend = "127.0.0.1:" + ports["FRONTEND_GRPC_PORT"]
	// The image's entrypoint: `temporal-server start` on its embedded
	// configuration template, filled from the environment.
	cl.temporal = newProc(t, "temporal", filepath.Join(cl.dir, "temporal"), serverEnv, cl.tools.server, "start")
	cl.startTemporal()

	nsEnv := cl.compose.environment(t, "temporal-namespace", map[string]string{
		"TEMPORAL_ADDRESS": cl.frontend, "PATH": cl.tools.binDir + ":" + os.Getenv("PATH"),
	}, cl.local)
	script = cl.compose.Services["temporal-namespace"].Entrypoint
	for range 2 {
		run(t, cl.dir, nsEnv, nil, "sh", cl.local(cl.compose.mounts(t, "temporal-namespace")[script[len(script)-1]]))
	}
	cl.startUI()
	return cl
}

// startUI runs the Web UI server as the temporalio/ui image does
// (`./ui-server --env docker start` beside config/docker.yaml), with the
// temporal-ui service's environment.
func (cl *cluster) startUI() {
	t := cl.t
	t.Helper()
	dir := filepath.Join(cl.dir, "temporal-ui")
	if err := os.MkdirAll(filepath.Join(dir, "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cl.tools.uiConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config", "docker.yaml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	env := cl.compose.environment(t, "temporal-ui", map[string]string{
		"TEMPORAL_ADDRESS": cl.frontend, "TEMPORAL_UI_PORT": strconv.Itoa(port),
	}, cl.local)
	cl.ui = newProc(t, "temporal-ui", dir, env, cl.tools.ui, "--env", "docker", "start")
	cl.ui.start()
	cl.uiURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(cl.uiURL + "/api/v1/namespaces")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"default"`)) {
				return
			}
			err = fmt.Errorf("%s: %s", resp.Status, body)
		}
		if time.Now().After(deadline) || cl.ui.exited() {
			t.Fatalf("the Web UI at %s does not list the namespace through the frontend: %v\n%s", cl.uiURL, err, tail(cl.ui.log, 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startTemporal starts the server and waits until its frontend answers over
// mutual TLS.
func (cl *cluster) startTemporal() {
	cl.t.Helper()
	cl.temporal.start()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		c, err := cl.dial("temporal-system")
		if err == nil {
			_, err = c.CheckHealth(context.Background(), &client.CheckHealthRequest{})
			c.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			cl.t.Fatalf("the Temporal frontend %s does not answer: %v\n%s", cl.frontend, err, tail(cl.temporal.log, 40))
		}
		if cl.temporal.exited() {
			cl.t.Fatalf("the Temporal server exited:\n%s", tail(cl.temporal.log, 60))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dial connects to the frontend with the admin certificate (role client),
// as the CLI and the Web UI do.
func (cl *cluster) dial(namespace string) (client.Client, error) {
	d := filepath.Join(cl.certs, "admin")
	conf, err := pki.TemporalTLS(filepath.Join(d, "ca.pem"), filepath.Join(d, "node.pem"), filepath.Join(d, "node-key.pem"), "temporal")
	if err != nil {
		return nil, err
	}
	return client.Dial(client.Options{HostPort: cl.frontend, Namespace: namespace, Logger: quietLogger{},
		ConnectionOptions: client.ConnectionOptions{TLS: conf}})
}

// quietLogger drops the SDK's log lines: the test reports what matters.
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

// link is the network between the proxies and the agent: a TCP relay whose
// rate the test sets, so that transfers last long enough to be cut.
type link struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	rate     int64 // bytes per second towards the agent; 0 unlimited
	next     time.Time
}

func startLink(t *testing.T, upstream string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{ln: ln, upstream: upstream}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go l.serve(c)
		}
	}()
	return l
}

func (l *link) addr() string { return l.ln.Addr().String() }

func (l *link) setRate(r int64) {
	l.mu.Lock()
	l.rate, l.next = r, time.Time{}
	l.mu.Unlock()
}

// pace delays n bytes so that all connections together keep to the rate.
func (l *link) pace(n int) {
	l.mu.Lock()
	if l.rate <= 0 {
		l.mu.Unlock()
		return
	}
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	l.next = l.next.Add(time.Duration(int64(n) * int64(time.Second) / l.rate))
	wait := time.Until(l.next)
	l.mu.Unlock()
	time.Sleep(wait)
}

func (l *link) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", l.upstream)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { io.Copy(c, up); c.Close() }()
	r := bufio.NewReaderSize(c, 32<<10)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			l.pace(n)
			if _, werr := up.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestCIInstallsTools checks that .ci/run installs what the topology runs:
// PostgreSQL, and the server, schema tool and CLI at the releases the test
// requires, so that CI runs the topology instead of failing for a tool.
func TestCIInstallsTools(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	ci := string(b)
	for _, want := range []string{
		"need+=(postgresql)",
		"install_at server go.temporal.io/server go.temporal.io/server/cmd/server \"$temporal_server\"",
		"install_at sql go.temporal.io/server go.temporal.io/server/cmd/tools/sql \"$temporal_server\"",
		"temporal_server=$(go list -m -f '{{.Version}}' go.temporal.io/server)",
		"install_at temporal github.com/temporalio/cli github.com/temporalio/cli/cmd/temporal " + cliRelease,
		"temporal_ui=$(go list -m -f '{{.Version}}' " + uiModule + ")",
		"install_at temporal-ui/server " + uiModule + " " + uiModule + "/cmd/server \"$temporal_ui\"",
	} {
		if !strings.Contains(ci, want) {
			t.Errorf(".ci/run does not contain %q", want)
		}
	}
}

// TestReadmeRunsTheTopology checks that README's "Running without Docker"
// tells an operator to run what the topology test runs: the same programs
// at the same releases, the compose file's scripts, and every variable the
// compose file gives the schema, server, namespace and Web UI steps.
func TestReadmeRunsTheTopology(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "### Running without Docker")
	if start < 0 {
		t.Fatal(`README.md has no "### Running without Docker" section`)
	}
	section := readme[start:]
	if end := strings.Index(section[1:], "\n## "); end >= 0 {
		section = section[:end+1]
	}
	release := temporalRelease(t)
	want := []string{
		"go install go.temporal.io/server/cmd/server@" + release,
		"go install go.temporal.io/server/cmd/tools/sql@" + release,
		"go install github.com/temporalio/cli/cmd/temporal@" + cliRelease,
		"go install " + uiModule + "/cmd/server@" + moduleVersion(t, uiModule),
		"server@" + release + "/schema/postgresql/v12",
		"sh deploy/temporal/setup-schema.sh", "sh deploy/temporal/create-namespace.sh", "start",
		"--roles jobs", "--roles proxy", "--roles target", "SCHEMA_DIR=", "temporal-sql-tool",
	}
	c := loadCompose(t)
	for _, svc := range []string{"temporal-schema", "temporal", "temporal-namespace", "temporal-ui"} {
		for k := range c.Services[svc].Environment {
			if k == "NAMESPACE" { // the script's default, "default"
				continue
			}
			want = append(want, k+"=")
		}
	}
	for _, w := range want {
		if !strings.Contains(section, w) {
			t.Errorf("README's \"Running without Docker\" does not say %q", w)
		}
	}
	// The certificates: README's and the compose header's commands are the
	// same (pkiCommands checks), and they issue every folder a service
	// mounts, each with its roles.
	issued := map[string]bool{}
	for _, args := range pkiCommands(t) {
		if len(args) >= 4 && args[1] == "issue" {
			if !slices.Contains(args, "--role") {
				t.Errorf("README issues %s without --role", args[3])
			}
			issued[args[3]] = true
		}
	}
	for svc := range c.Services {
		for _, src := range c.mounts(t, svc) {
			if name, ok := strings.CutPrefix(src, "deploy/tls/"); ok && !issued[name] {
				t.Errorf("docker-compose.yml: service %s mounts %s, which README's `starter pki issue` commands do not make", svc, src)
			}
		}
	}
}
