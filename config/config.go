// Package config loads the replicator configuration: a YAML file (or the
// --dev configuration, Dev), overridden by REPLICATOR_<SECTION>_<KEY>
// environment variables and command-line flags layered with viper, then
// validated as a whole. Every problem names the key path and the reason (and
// the line of the file); nothing runs on a half-valid configuration.
//
// Load is the entry point; example.yaml shows and explains every key.
package config

import (
	"fmt"
	"strings"
	"time"
	// Time zones of windowHours resolve the same on every machine,
	// Windows included, whatever zoneinfo it has.
	_ "time/tzdata"

	"github.com/replicator/replicator/internal/hours"
	"github.com/replicator/replicator/internal/throttle"
)

// Config is the whole configuration of a worker or of the starter.
type Config struct {
	Temporal Temporal `yaml:"temporal"`
	Hosts    []Host   `yaml:"hosts"`
	Targets  []Target `yaml:"targets"`
	Agent    Agent    `yaml:"agent"`
	TLS      TLS      `yaml:"tls"`
	Metrics  Metrics  `yaml:"metrics"`
	Jobs     []Job    `yaml:"jobs"`
	Notify   Notify   `yaml:"notify,omitempty"`
	// FailoverPlans fail groups of replica VMs over in order (recovery.go).
	FailoverPlans []FailoverPlan `yaml:"failoverPlans,omitempty"`
}

// Notify is where the summary of every job run goes when it ends.
type Notify struct {
	// Webhook receives the run's summary as JSON (POST); empty: none.
	Webhook string `yaml:"webhook,omitempty"`
	SMTP    SMTP   `yaml:"smtp,omitempty"`
}

// SMTP sends the summary by e-mail when Address is set.
type SMTP struct {
	Address      string   `yaml:"address,omitempty"` // host:port of the mail server
	From         string   `yaml:"from,omitempty"`
	To           []string `yaml:"to,omitempty"`
	Username     string   `yaml:"username,omitempty"`
	PasswordFile string   `yaml:"passwordFile,omitempty"`
}

// Enabled says whether any notification is configured.
func (n Notify) Enabled() bool { return n.Webhook != "" || n.SMTP.Address != "" }

// Temporal is how to reach the Temporal cluster.
type Temporal struct {
	Address   string `yaml:"address"`
	Namespace string `yaml:"namespace"`
	TaskQueue string `yaml:"taskQueue"`
	// TLS to the Temporal frontend (optional; empty means plaintext).
	TLS TemporalTLS `yaml:"tls"`
	// APIKeyFile holds an API key sent as a bearer token with every call
	// (Temporal Cloud API keys, or a cluster whose claim mapper reads JWTs);
	// only over TLS. Empty: none.
	APIKeyFile string `yaml:"apiKeyFile"`
	// CodecKeyFile holds the AES-256 key (64 hex digits) of the payload
	// codec: every payload (inputs, results, heartbeats, errors' details) is
	// encrypted before it leaves the process, so the cluster's database and
	// Web UI hold only ciphertext. Empty: payloads in plain JSON.
	CodecKeyFile string `yaml:"codecKeyFile"`
	// APIKey is the API key itself, from TEMPORAL_API_KEY (temporalenv.go)
	// when no apiKeyFile is configured; never read from a file or
	// REPLICATOR_* variable, never written out.
	APIKey string `yaml:"-"`
}

// TemporalTLS is TLS to the Temporal frontend: with CA alone (or Enabled
// alone, for the system's roots) the frontend is authenticated; Cert and Key
// add a client certificate (mutual TLS).
type TemporalTLS struct {
	Enabled bool   `yaml:"enabled"`
	CA      string `yaml:"ca"`
	Cert    string `yaml:"cert"`
	Key     string `yaml:"key"`
	// ServerName is the name the frontend's certificate must carry (default:
	// the host of temporal.address).
	ServerName string `yaml:"serverName"`
	// DisableHostVerification accepts any certificate name, from
	// TEMPORAL_TLS_DISABLE_HOST_VERIFICATION (temporalenv.go) only.
	DisableHostVerification bool `yaml:"-"`
}

// On reports whether TLS to the frontend is configured.
func (t TemporalTLS) On() bool { return t.Enabled || t.CA != "" || t.Cert != "" }

// Host is a source virtualization host.
type Host struct {
	Name     string `yaml:"name"`
	Provider string `yaml:"provider"` // lab | hyperv | hyperv-sim
	// Path is the lab folder (provider lab), the WMI host ("." = local) for
	// hyperv, or the folder of the simulated host's VMs for hyperv-sim.
	Path string `yaml:"path"`
	// Simulator tunes a hyperv-sim host.
	Simulator Simulator `yaml:"simulator,omitempty"`
	// Username and PasswordFile authenticate to a remote Hyper-V host (optional).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"passwordFile"`
}

// Simulator tunes the WMI-level Hyper-V simulator of a hyperv-sim host.
type Simulator struct {
	// JobDelay is how long each WMI job (checkpoint, conversion, release) runs.
	JobDelay time.Duration `yaml:"jobDelay,omitempty"`
	// JobWarnings ends every successful job in state 32768, completed with warnings.
	JobWarnings bool `yaml:"jobWarnings,omitempty"`
}

// Target is a replica target as seen from the proxy.
type Target struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"` // data channel of the target's agent
	// StallTimeout ends a transfer attempt whose connection takes data but
	// brings no acknowledgement for this long (a half-open connection); the
	// transfer reconnects and resumes. 0 means 30 s.
	StallTimeout time.Duration `yaml:"stallTimeout,omitempty"`
	// Throttle limits the bandwidth of all transfers to this target together:
	// the first rule whose hours hold now applies; none: unlimited.
	Throttle []ThrottleRule `yaml:"throttle,omitempty"`
	// Timezone is the IANA time zone of the throttle rules' hours (default UTC).
	Timezone string `yaml:"timezone,omitempty"`
}

// ThrottleRule is a bandwidth limit ("50MiB/s"; 0 unlimited) during hours
// (the syntax of jobs[].windowHours; empty: always).
type ThrottleRule struct {
	Limit string `yaml:"limit"`
	Hours string `yaml:"hours,omitempty"`
}

// ParseRate reads a bandwidth: a byte size per second ("50MiB/s", "500KiB/s",
// "10MB/s") or 0 for unlimited.
func ParseRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "0" {
		return 0, nil
	}
	size, ok := strings.CutSuffix(t, "/s")
	if !ok {
		return 0, fmt.Errorf("bandwidth %q: want a size per second such as 50MiB/s, or 0 for unlimited", s)
	}
	n, err := ParseByteSize(size)
	if err != nil {
		return 0, fmt.Errorf("bandwidth %q: %w", s, err)
	}
	return int64(n), nil
}

// ThrottleRules are the target's throttle as the proxy applies it.
func (t *Target) ThrottleRules() ([]throttle.Rule, error) {
	tz := t.Timezone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("timezone %q: %w", tz, err)
	}
	var out []throttle.Rule
	for i, r := range t.Throttle {
		bps, err := ParseRate(r.Limit)
		if err != nil {
			return nil, fmt.Errorf("throttle[%d].limit: %w", i, err)
		}
		h, err := hours.Parse(r.Hours, loc)
		if err != nil {
			return nil, fmt.Errorf("throttle[%d].hours: %w", i, err)
		}
		out = append(out, throttle.Rule{BytesPerSecond: bps, Hours: h})
	}
	return out, nil
}

// Agent is the target role of this process.
type Agent struct {
	Name      string `yaml:"name"`
	Listen    string `yaml:"listen"`
	Datastore string `yaml:"datastore"`
	// EncryptionKeyFile holds the datastore's key for encryption at rest
	// (64 hex digits, mode 0600): replica disks are stored AES-256-GCM
	// encrypted. Empty: not encrypted. A datastore is encrypted from its
	// first replica on, or never.
	EncryptionKeyFile string `yaml:"encryptionKeyFile,omitempty"`
	// Host is the target's own virtualization host, where replica VMs are
	// registered (empty name: none).
	Host Host `yaml:"host,omitempty"`
}

// TLS names PEM files: the CA that signs peers, and this process's certificate and key.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CRL is a copy of the CA's revocation list (`starter pki revoke`):
	// peers it lists are refused; re-read when it changes. Empty: none.
	CRL string `yaml:"crl"`
}

// Metrics is where Prometheus metrics are served.
type Metrics struct {
	Listen string `yaml:"listen"` // empty disables
}

// Job is one replication job.
type Job struct {
	Name   string   `yaml:"name"`
	Source string   `yaml:"source"` // a Host name
	Target string   `yaml:"target"` // a Target name
	VMs    []string `yaml:"vms"`    // names, ids, or "*"
	// Window is the backup window; 0 means unlimited.
	Window          time.Duration   `yaml:"window"`
	Compression     string          `yaml:"compression"` // none | fast | optimal | high | extreme
	BlockSize       ByteSize        `yaml:"blockSize"`
	ChangeTracking  string          `yaml:"changeTracking"` // auto | rct | digest | full
	Exclude         Exclude         `yaml:"exclude"`
	Retention       int             `yaml:"retention"`
	Parallelism     int             `yaml:"parallelism"`
	GuestProcessing GuestProcessing `yaml:"guestProcessing"`
	// Consistency is "application" (the host freezes the guest's
	// applications, falling back to crash-consistent with a warning when
	// the guest cannot) or "crash".
	Consistency string `yaml:"consistency"`
	// GuestBackupType is what the guest's applications are told the
	// application-consistent checkpoint is: "copy" (their logs are left
	// alone) or "full" (they may truncate them).
	GuestBackupType string `yaml:"guestBackupType"`
	// NetworkMapping maps source switches to target switches for replica VMs.
	NetworkMapping map[string]string `yaml:"networkMapping,omitempty"`
	// ReIP are the re-IP rules applied to replica VMs at failover.
	ReIP []ReIP `yaml:"reIP,omitempty"`
	// Overlap is what a run does with a VM that another run (of this job or
	// of another job reading the same VM) is replicating: "skip" leaves it to
	// that run, "wait" waits for that run to finish it.
	Overlap string `yaml:"overlap"`
	// WindowHours are the permitted hours of runs, e.g. "Mon-Fri 20:00-06:00,
	// Sat-Sun 00:00-24:00" (package hours), in Timezone (an IANA name).
	// Empty: any time. With Window, the earlier end wins.
	WindowHours string `yaml:"windowHours"`
	Timezone    string `yaml:"timezone"`
	// Retries is how many more times a VM that failed for a reason that may
	// pass is tried inside the run, RetryWait apart, while the window allows.
	Retries   int           `yaml:"retries"`
	RetryWait time.Duration `yaml:"retryWait"`
	// RPO is the recovery point objective: the oldest the newest restore
	// point of each VM may be. With it, the jobs role keeps a schedule that
	// runs the job often enough (every RPO/2); zero: the job runs when
	// started.
	RPO time.Duration `yaml:"rpo,omitempty"`
}

// Hours is the job's windowHours in its timezone.
func (j *Job) Hours() (hours.Schedule, error) {
	tz := j.Timezone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return hours.Schedule{}, fmt.Errorf("timezone %q: %w", tz, err)
	}
	return hours.Parse(j.WindowHours, loc)
}

// Exclude says what need not travel.
type Exclude struct {
	ZeroBlocks bool     `yaml:"zeroBlocks"`
	Swap       bool     `yaml:"swap"`
	Paths      []string `yaml:"paths"` // guest paths, "*" wildcards
}

// GuestProcessing is application-aware processing inside the guests.
type GuestProcessing struct {
	Enabled bool `yaml:"enabled"`
	// OnFailure: "fail" fails the VM; "continue" takes a crash-consistent checkpoint with a warning.
	OnFailure string        `yaml:"onFailure"`
	Timeout   time.Duration `yaml:"timeout"`
	PreFreeze []string      `yaml:"preFreeze"` // commands run before the checkpoint
	PostThaw  []string      `yaml:"postThaw"`  // commands run after it
	SSH       SSH           `yaml:"ssh"`
	// Guests maps a VM name to the address of its guest (host:port for SSH).
	Guests map[string]string `yaml:"guests"`
	// Method is how the commands reach the guests: "ssh" (over the network)
	// or "powershell-direct" (Windows guests, from the Hyper-V host itself,
	// without a network path). Default ssh.
	Method string `yaml:"method"`
	// Methods overrides Method for some VMs (by name).
	Methods map[string]string `yaml:"methods"`
	// PowerShellDirect are the credentials of Windows guests.
	PowerShellDirect PowerShellDirect `yaml:"powershellDirect"`
}

// PowerShellDirect are the guest credentials PowerShell Direct uses.
type PowerShellDirect struct {
	User         string `yaml:"user"`
	PasswordFile string `yaml:"passwordFile"`
}

// MethodFor is the guest processing method of a VM.
func (g GuestProcessing) MethodFor(vm string) string {
	if m, ok := g.Methods[vm]; ok && m != "" {
		return m
	}
	if g.Method == "" {
		return "ssh"
	}
	return g.Method
}

// SSH are the credentials of Linux guests.
type SSH struct {
	User         string `yaml:"user"`
	KeyFile      string `yaml:"keyFile"`
	PasswordFile string `yaml:"passwordFile"`
	// KnownHosts is an OpenSSH known_hosts file that pins the guests' host keys.
	KnownHosts string `yaml:"knownHosts"`
}

// ByteSize is a size in bytes written as "1MiB", "512KiB", "4MB" or a plain number.
type ByteSize int64

// Job returns the job of that name.
func (c *Config) Job(name string) (*Job, bool) {
	for i := range c.Jobs {
		if c.Jobs[i].Name == name {
			return &c.Jobs[i], true
		}
	}
	return nil, false
}

// Host returns the source host of that name.
func (c *Config) Host(name string) (*Host, bool) {
	for i := range c.Hosts {
		if c.Hosts[i].Name == name {
			return &c.Hosts[i], true
		}
	}
	return nil, false
}

// Target returns the target of that name.
func (c *Config) Target(name string) (*Target, bool) {
	for i := range c.Targets {
		if c.Targets[i].Name == name {
			return &c.Targets[i], true
		}
	}
	return nil, false
}
