package config

import (
	"fmt"
	"maps"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/replicator/replicator/internal/hours"
	"github.com/replicator/replicator/internal/names"
)

// Problem is one fault of a configuration: the key path, such as
// jobs[0].compression, and why it is wrong.
type Problem struct {
	Path   string
	Reason string
	// Line is the line of the file where the key stands; 0 when unknown.
	Line int
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s: %s (line %d)", p.Path, p.Reason, p.Line)
	}
	return p.Path + ": " + p.Reason
}

// ValidationError lists every problem of a configuration at once.
type ValidationError struct {
	// File is the configuration file; empty for the --dev configuration.
	File     string
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	src := "configuration"
	if e.File != "" {
		src = "configuration " + e.File
	}
	fmt.Fprintf(&b, "invalid %s: %d problem", src, len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString(":")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Allowed values of the enumerated keys.
var (
	Providers        = []string{"lab", "hyperv", "hyperv-sim"}
	Consistencies    = []string{"application", "crash"}
	GuestBackupTypes = []string{"copy", "full"}
	GuestMethods     = []string{"ssh", "powershell-direct"}
	Compressions     = []string{"none", "fast", "optimal", "high", "extreme"}
	ChangeTrackings  = []string{"auto", "rct", "digest", "full"}
	OnFailures       = []string{"fail", "continue"}
	Overlaps         = []string{"skip", "wait"}
)

// Limits of the numeric keys of a job.
const (
	MinBlockSize   = 64 * KiB
	MaxBlockSize   = 64 * MiB
	MaxParallelism = 64
	// MaxRetries bounds jobs[].retries: each retry adds to the run's history.
	MaxRetries = 100
	// MinRPO and MaxRPO bound jobs[].rpo: a run every MinRPO/2 is as often as
	// a schedule starts runs usefully; a day is as seldom as an objective
	// means anything (longer: schedule the job with starter schedule).
	MinRPO        = 10 * time.Second
	MaxRPO        = 24 * time.Hour
	MaxNameLength = names.MaxLen
)

// Validate checks the whole configuration and returns a *ValidationError
// listing every problem, or nil.
func (c *Config) Validate() error {
	if p := c.validate(); len(p) > 0 {
		return &ValidationError{Problems: p}
	}
	return nil
}

type checker struct{ problems []Problem }

func (ck *checker) add(path, format string, args ...any) {
	ck.problems = append(ck.problems, Problem{Path: path, Reason: fmt.Sprintf(format, args...)})
}

func (c *Config) validate() []Problem {
	ck := &checker{}

	ck.dialAddress("temporal.address", c.Temporal.Address)
	if c.Temporal.Namespace == "" {
		ck.add("temporal.namespace", "required")
	}
	if c.Temporal.TaskQueue == "" {
		ck.add("temporal.taskQueue", "required")
	}
	if c.Temporal.APIKeyFile != "" && !c.Temporal.TLS.On() {
		ck.add("temporal.apiKeyFile", "an API key is sent only over TLS: set temporal.tls.ca or temporal.tls.enabled")
	}
	if c.Temporal.APIKey != "" && !c.Temporal.TLS.On() {
		ck.add("temporal.apiKey", "an API key is sent only over TLS: unset TEMPORAL_TLS=false or set temporal.tls")
	}
	ck.noNUL("temporal.apiKeyFile", c.Temporal.APIKeyFile)
	ck.noNUL("temporal.codecKeyFile", c.Temporal.CodecKeyFile)
	ck.noNUL("tls.crl", c.TLS.CRL)
	ck.noNUL("agent.encryptionKeyFile", c.Agent.EncryptionKeyFile)
	if c.TLS.CRL != "" && c.TLS.CA == "" {
		ck.add("tls.crl", "needs tls.ca (the CA that signed the list)")
	}
	// To the Temporal frontend the CA may come from the system roots, but a
	// client certificate needs its key.
	if (c.Temporal.TLS.Cert == "") != (c.Temporal.TLS.Key == "") {
		if c.Temporal.TLS.Cert == "" {
			ck.add("temporal.tls.cert", "required when temporal.tls.key is set")
		} else {
			ck.add("temporal.tls.key", "required when temporal.tls.cert is set")
		}
	}

	hostNames := map[string]int{}
	for i, h := range c.Hosts {
		p := fmt.Sprintf("hosts[%d]", i)
		ck.uniqueName(p+".name", h.Name, hostNames, i, "hosts")
		switch {
		case h.Provider == "":
			ck.add(p+".provider", "required: one of %s", strings.Join(Providers, ", "))
		case !oneOf(h.Provider, Providers):
			ck.add(p+".provider", "unknown provider %q: want one of %s", h.Provider, strings.Join(Providers, ", "))
		}
		if h.Provider == "lab" && h.Path == "" {
			ck.add(p+".path", "required for provider lab: the folder of the lab VMs")
		}
		if h.Provider == "hyperv-sim" && h.Path == "" {
			ck.add(p+".path", "required for provider hyperv-sim: the folder of the simulated host's VMs")
		}
		if h.Provider != "hyperv-sim" && h.Simulator != (Simulator{}) {
			ck.add(p+".simulator", "only for provider hyperv-sim (this host's provider is %q)", h.Provider)
		}
		if h.Simulator.JobDelay < 0 {
			ck.add(p+".simulator.jobDelay", "negative (%s)", h.Simulator.JobDelay)
		}
		ck.noNUL(p+".path", h.Path)
		if h.PasswordFile != "" && h.Username == "" {
			ck.add(p+".username", "required when passwordFile is set")
		}
	}

	if w := c.Notify.Webhook; w != "" {
		if u, err := url.Parse(w); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ck.add("notify.webhook", "%q: want an http:// or https:// URL", w)
		}
	}
	if m := c.Notify.SMTP; m.Address != "" {
		ck.dialAddress("notify.smtp.address", m.Address)
		if _, err := mail.ParseAddress(m.From); err != nil {
			ck.add("notify.smtp.from", "%q: want an e-mail address", m.From)
		}
		if len(m.To) == 0 {
			ck.add("notify.smtp.to", "empty: list who receives the summaries")
		}
		for k, to := range m.To {
			if _, err := mail.ParseAddress(to); err != nil {
				ck.add(fmt.Sprintf("notify.smtp.to[%d]", k), "%q: want an e-mail address", to)
			}
		}
		if (m.Username == "") != (m.PasswordFile == "") {
			ck.add("notify.smtp.passwordFile", "username and passwordFile go together")
		}
	}

	targetNames := map[string]int{}
	for i, t := range c.Targets {
		p := fmt.Sprintf("targets[%d]", i)
		ck.uniqueName(p+".name", t.Name, targetNames, i, "targets")
		ck.dialAddress(p+".address", t.Address)
		if t.StallTimeout < 0 || (t.StallTimeout > 0 && t.StallTimeout < 5*time.Second) {
			ck.add(p+".stallTimeout", "%s: want 0 for the default (30s) or at least 5s (the agent acknowledges every 2 s)", t.StallTimeout)
		}
		if t.Timezone != "" {
			if _, err := time.LoadLocation(t.Timezone); err != nil {
				ck.add(p+".timezone", "unknown time zone %q: want an IANA name such as UTC or Europe/Paris", t.Timezone)
			}
		}
		for k, r := range t.Throttle {
			rp := fmt.Sprintf("%s.throttle[%d]", p, k)
			if _, err := ParseRate(r.Limit); err != nil {
				ck.add(rp+".limit", "%v", err)
			}
			if _, err := hours.Parse(r.Hours, nil); err != nil {
				ck.add(rp+".hours", "%v", err)
			}
		}
	}

	if c.Agent.Name != "" {
		ck.name("agent.name", c.Agent.Name)
		ck.listenAddress("agent.listen", c.Agent.Listen, true)
		if c.Agent.Datastore == "" {
			ck.add("agent.datastore", "required when agent.name is set: the folder of the replicas")
		}
		ck.noNUL("agent.datastore", c.Agent.Datastore)
	} else if c.Agent.Listen != "" || c.Agent.Datastore != "" {
		ck.add("agent.name", "required when agent.listen or agent.datastore is set")
	}

	tlsSet := 0
	for _, f := range []string{c.TLS.CA, c.TLS.Cert, c.TLS.Key} {
		if f != "" {
			tlsSet++
		}
	}
	if tlsSet > 0 && tlsSet < 3 {
		for _, f := range []struct{ key, val string }{{"tls.ca", c.TLS.CA}, {"tls.cert", c.TLS.Cert}, {"tls.key", c.TLS.Key}} {
			if f.val == "" {
				ck.add(f.key, "required: set all of tls.ca, tls.cert and tls.key, or none")
			}
		}
	}

	if c.Metrics.Listen != "" {
		ck.listenAddress("metrics.listen", c.Metrics.Listen, true)
	}

	jobNames := map[string]int{}
	for i := range c.Jobs {
		ck.job(fmt.Sprintf("jobs[%d]", i), &c.Jobs[i], i, jobNames, hostNames, targetNames)
	}
	ck.recovery(c, jobNames)
	return ck.problems
}

func (ck *checker) job(p string, j *Job, i int, jobNames, hostNames, targetNames map[string]int) {
	ck.uniqueName(p+".name", j.Name, jobNames, i, "jobs")
	switch {
	case j.Source == "":
		ck.add(p+".source", "required: the name of a host")
	case !has(hostNames, j.Source):
		ck.add(p+".source", "no host named %q in hosts", j.Source)
	}
	switch {
	case j.Target == "":
		ck.add(p+".target", "required: the name of a target")
	case !has(targetNames, j.Target):
		ck.add(p+".target", "no target named %q in targets", j.Target)
	}
	if len(j.VMs) == 0 {
		ck.add(p+".vms", "empty: list VM names or ids, or \"*\" for all")
	}
	for k, vm := range j.VMs {
		ck.nonEmptyEntry(fmt.Sprintf("%s.vms[%d]", p, k), vm)
	}
	if j.Window < 0 {
		ck.add(p+".window", "negative (%s): want 0 for unlimited or a positive duration", j.Window)
	}
	if !oneOf(j.Compression, Compressions) {
		ck.add(p+".compression", "unknown compression %q: want one of %s", j.Compression, strings.Join(Compressions, ", "))
	}
	if j.Timezone != "" {
		if _, err := time.LoadLocation(j.Timezone); err != nil {
			ck.add(p+".timezone", "unknown time zone %q: want an IANA name such as UTC or Europe/Paris", j.Timezone)
		}
	}
	if _, err := hours.Parse(j.WindowHours, nil); err != nil {
		ck.add(p+".windowHours", "%v", err)
	}
	if j.Retries < 0 || j.Retries > MaxRetries {
		ck.add(p+".retries", "%d: want 0 (no retry) to %d", j.Retries, MaxRetries)
	}
	if j.RPO != 0 && (j.RPO < MinRPO || j.RPO > MaxRPO) {
		ck.add(p+".rpo", "%s: want a duration from %s to %s, such as 30s or 5m (or none)", j.RPO, MinRPO, MaxRPO)
	}
	if j.RetryWait < 0 {
		ck.add(p+".retryWait", "negative (%s): want a duration such as 10m", j.RetryWait)
	}
	if !oneOf(j.Overlap, Overlaps) {
		ck.add(p+".overlap", "unknown overlap %q: want one of %s", j.Overlap, strings.Join(Overlaps, ", "))
	}
	switch bs := j.BlockSize; {
	case bs < MinBlockSize || bs > MaxBlockSize:
		ck.add(p+".blockSize", "%s out of range: want a power of two from %s to %s", sizeText(bs), MinBlockSize, MaxBlockSize)
	case bs&(bs-1) != 0:
		ck.add(p+".blockSize", "%s is not a power of two", sizeText(bs))
	case bs%4096 != 0:
		ck.add(p+".blockSize", "%s is not a multiple of 4096", sizeText(bs))
	}
	if !oneOf(j.ChangeTracking, ChangeTrackings) {
		ck.add(p+".changeTracking", "unknown change tracking %q: want one of %s", j.ChangeTracking, strings.Join(ChangeTrackings, ", "))
	}
	for k, path := range j.Exclude.Paths {
		ck.nonEmptyEntry(fmt.Sprintf("%s.exclude.paths[%d]", p, k), path)
	}
	if j.Retention < 1 {
		ck.add(p+".retention", "%d: want at least 1 restore point", j.Retention)
	}
	if j.Parallelism < 1 || j.Parallelism > MaxParallelism {
		ck.add(p+".parallelism", "%d: want 1 to %d VMs at once", j.Parallelism, MaxParallelism)
	}

	if !oneOf(j.GuestBackupType, GuestBackupTypes) {
		ck.add(p+".guestBackupType", "unknown guest backup type %q: want copy or full", j.GuestBackupType)
	}
	if !oneOf(j.Consistency, Consistencies) {
		ck.add(p+".consistency", "unknown consistency %q: want application or crash", j.Consistency)
	}

	g := &j.GuestProcessing
	gp := p + ".guestProcessing"
	if !oneOf(g.OnFailure, OnFailures) {
		ck.add(gp+".onFailure", "unknown %q: want fail or continue", g.OnFailure)
	}
	if g.Timeout < 0 {
		ck.add(gp+".timeout", "negative (%s)", g.Timeout)
	}
	for k, cmd := range g.PreFreeze {
		ck.nonEmptyEntry(fmt.Sprintf("%s.preFreeze[%d]", gp, k), cmd)
	}
	for k, cmd := range g.PostThaw {
		ck.nonEmptyEntry(fmt.Sprintf("%s.postThaw[%d]", gp, k), cmd)
	}
	vms := make([]string, 0, len(g.Guests))
	for vm := range g.Guests {
		vms = append(vms, vm)
	}
	sort.Strings(vms)
	for _, vm := range vms {
		addr := g.Guests[vm]
		if vm == "" {
			ck.add(gp+".guests", "a VM name is empty")
		}
		if strings.TrimSpace(addr) == "" {
			ck.add(gp+".guests."+vm, "empty address: want host or host:port")
		}
	}
	if !oneOf(g.Method, GuestMethods) {
		ck.add(gp+".method", "unknown method %q: want ssh or powershell-direct", g.Method)
	}
	usesSSH, usesPSDirect := g.Method == "ssh", g.Method == "powershell-direct"
	for _, vm := range slices.Sorted(maps.Keys(g.Methods)) { // a stable order of problems
		switch m := g.Methods[vm]; m {
		case "ssh":
			usesSSH = true
		case "powershell-direct":
			usesPSDirect = true
		default:
			ck.add(gp+".methods."+vm, "unknown method %q: want ssh or powershell-direct", m)
		}
	}
	if g.Enabled && usesPSDirect {
		if g.PowerShellDirect.User == "" {
			ck.add(gp+".powershellDirect.user", "required when a VM's guest processing method is powershell-direct")
		}
		if g.PowerShellDirect.PasswordFile == "" {
			ck.add(gp+".powershellDirect.passwordFile", "required when a VM's guest processing method is powershell-direct")
		}
	}
	if g.Enabled {
		if g.Timeout == 0 {
			ck.add(gp+".timeout", "must be positive when guest processing is enabled")
		}
	}
	if g.Enabled && usesSSH {
		if g.SSH.User == "" {
			ck.add(gp+".ssh.user", "required when guest processing is enabled")
		}
		if g.SSH.KeyFile == "" && g.SSH.PasswordFile == "" {
			ck.add(gp+".ssh.keyFile", "required when guest processing is enabled (or ssh.passwordFile)")
		}
		if g.SSH.KnownHosts == "" {
			ck.add(gp+".ssh.knownHosts", "required when guest processing is enabled: guests' host keys are pinned, never trusted on first use")
		}
	}
}

// uniqueName checks a name that becomes a path element and a map key.
func (ck *checker) uniqueName(path, name string, seen map[string]int, i int, list string) {
	if !ck.name(path, name) {
		return
	}
	if first, dup := seen[name]; dup {
		ck.add(path, "duplicate name %q (also %s[%d])", name, list, first)
		return
	}
	seen[name] = i
}

// name checks that a name is safe as one path element on every OS; it
// reports the problem and returns false if it is not.
func (ck *checker) name(path, name string) bool {
	if reason := NameProblem(name); reason != "" {
		ck.add(path, "%s", reason)
		return false
	}
	return true
}

// NameProblem says why a name of a host, target, agent or job cannot be
// used, or returns "" when it can: the names package's rule for names an
// operator chooses.
func NameProblem(name string) string {
	if name == "" {
		return "required"
	}
	if err := names.Plain("", name); err != nil {
		return err.Error()
	}
	return ""
}

func (ck *checker) nonEmptyEntry(path, s string) {
	switch {
	case strings.TrimSpace(s) == "":
		ck.add(path, "empty entry")
	case strings.ContainsRune(s, 0):
		ck.add(path, "contains a NUL byte")
	}
}

func (ck *checker) noNUL(path, s string) {
	if strings.ContainsRune(s, 0) {
		ck.add(path, "contains a NUL byte")
	}
}

// dialAddress checks an address to connect to: host:port, both present.
func (ck *checker) dialAddress(path, addr string) {
	if addr == "" {
		ck.add(path, "required: host:port")
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		ck.add(path, "invalid address %q: want host:port", addr)
		return
	}
	if host == "" {
		ck.add(path, "invalid address %q: host is missing", addr)
	}
	if !validPort(port, false) {
		ck.add(path, "invalid address %q: port must be 1 to 65535", addr)
	}
}

// listenAddress checks an address to listen on: the host may be empty (all
// interfaces); port 0 (any free port) is allowed when anyPort.
func (ck *checker) listenAddress(path, addr string, anyPort bool) {
	if addr == "" {
		ck.add(path, "required: host:port")
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		ck.add(path, "invalid address %q: want host:port", addr)
		return
	}
	if !validPort(port, anyPort) {
		ck.add(path, "invalid address %q: port must be 1 to 65535", addr)
	}
}

func validPort(port string, zeroOK bool) bool {
	n, err := strconv.Atoi(port)
	if err != nil {
		return false
	}
	return (n >= 1 || zeroOK && n == 0) && n <= 65535
}

func oneOf(s string, allowed []string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}

func has(m map[string]int, k string) bool {
	_, ok := m[k]
	return ok
}

// sizeText writes a size as configured and, when it has a unit, in bytes too.
func sizeText(b ByteSize) string {
	s := b.String()
	if strings.HasSuffix(s, "iB") {
		return fmt.Sprintf("%s (%d bytes)", s, int64(b))
	}
	return s
}
