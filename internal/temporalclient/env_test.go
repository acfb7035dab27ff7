package temporalclient

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/pki"
)

// temporalVars are every variable of the Temporal CLI's environment that
// the configuration reads; each test starts with none of them set.
var temporalVars = []string{
	"TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_TLS",
	"TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH", "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
	"TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY", "TEMPORAL_TLS_CA", "TEMPORAL_TLS_SERVER_NAME",
	"TEMPORAL_TLS_DISABLE_HOST_VERIFICATION", "TEMPORAL_TLS_CLIENT_CERT_DATA", "TEMPORAL_TLS_CERT_DATA",
	"TEMPORAL_TLS_CLIENT_KEY_DATA", "TEMPORAL_TLS_KEY_DATA", "TEMPORAL_TLS_SERVER_CA_CERT_DATA", "TEMPORAL_TLS_CA_DATA",
	"REPLICATOR_TEMPORAL_ADDRESS", "REPLICATOR_TEMPORAL_NAMESPACE", "REPLICATOR_TEMPORAL_TLS_CA",
}

func clearTemporalEnv(t *testing.T) {
	t.Helper()
	for _, v := range temporalVars {
		t.Setenv(v, "") // restored after the test
		os.Unsetenv(v)
	}
}

// load writes yaml as a configuration file and loads it as the processes do.
func load(t *testing.T, yaml string) (*config.Config, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "replicator.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return config.Load(config.LoadOptions{File: f})
}

// The Temporal CLI's variables fill what the file leaves out; the file,
// REPLICATOR_* variables and flags win over them; the built-in --dev
// configuration ignores them.
func TestTemporalEnvironmentBelowProjectKeys(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := pki.NewCA(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		address, namespace, ca, serverName string
		tls, apiKey                        bool
	}
	for _, c := range []struct {
		name  string
		env   map[string]string
		yaml  string // "" : the built-in --dev configuration
		flags []string
		want  want
	}{
		{name: "the file leaves address and namespace to the environment",
			env:  map[string]string{"TEMPORAL_ADDRESS": "temporal.example:7233", "TEMPORAL_NAMESPACE": "prod"},
			yaml: "temporal: {taskQueue: replication}\n",
			want: want{address: "temporal.example:7233", namespace: "prod"}},
		{name: "the file wins over the environment",
			env:  map[string]string{"TEMPORAL_ADDRESS": "temporal.example:7233", "TEMPORAL_NAMESPACE": "prod"},
			yaml: "temporal: {address: file.example:7233, namespace: default}\n",
			want: want{address: "file.example:7233", namespace: "default"}},
		{name: "REPLICATOR_* wins over TEMPORAL_*",
			env:  map[string]string{"TEMPORAL_ADDRESS": "temporal.example:7233", "REPLICATOR_TEMPORAL_ADDRESS": "replicator.example:7233"},
			yaml: "temporal: {namespace: ops}\n",
			want: want{address: "replicator.example:7233", namespace: "ops"}},
		{name: "a flag wins over TEMPORAL_*",
			env:   map[string]string{"TEMPORAL_ADDRESS": "temporal.example:7233"},
			yaml:  "temporal: {namespace: ops}\n",
			flags: []string{"--temporal.address", "flag.example:7233"},
			want:  want{address: "flag.example:7233", namespace: "ops"}},
		{name: "the dev configuration ignores the environment",
			env:  map[string]string{"TEMPORAL_ADDRESS": "temporal.example:7233", "TEMPORAL_NAMESPACE": "prod", "TEMPORAL_TLS": "true"},
			want: want{address: "127.0.0.1:7233", namespace: "default"}},
		{name: "a CA from the environment turns TLS on, with a server name",
			env:  map[string]string{"TEMPORAL_ADDRESS": "10.0.0.9:7233", "TEMPORAL_TLS_SERVER_CA_CERT_PATH": ca.File, "TEMPORAL_TLS_SERVER_NAME": "frontend.internal"},
			yaml: "temporal: {namespace: ops}\n",
			want: want{address: "10.0.0.9:7233", namespace: "ops", ca: ca.File, serverName: "frontend.internal", tls: true}},
		{name: "the older TEMPORAL_TLS_CA wins over the newer name, as in the CLI",
			env:  map[string]string{"TEMPORAL_TLS_SERVER_CA_CERT_PATH": otherCA.File, "TEMPORAL_TLS_CA": ca.File},
			yaml: "temporal: {address: t.example:7233}\n",
			want: want{address: "t.example:7233", namespace: "default", ca: ca.File, serverName: "t.example", tls: true}},
		{name: "the file's CA wins over the environment's",
			env:  map[string]string{"TEMPORAL_TLS_SERVER_CA_CERT_PATH": otherCA.File},
			yaml: "temporal: {address: t.example:7233, tls: {ca: " + ca.File + "}}\n",
			want: want{address: "t.example:7233", namespace: "default", ca: ca.File, serverName: "t.example", tls: true}},
		{name: "an API key turns TLS on (system roots)",
			env:  map[string]string{"TEMPORAL_API_KEY": "k-1"},
			yaml: "temporal: {address: cloud.example:7233}\n",
			want: want{address: "cloud.example:7233", namespace: "default", serverName: "cloud.example", tls: true, apiKey: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			clearTemporalEnv(t)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			o := config.LoadOptions{DataDir: t.TempDir()}
			if c.yaml != "" {
				o.File = filepath.Join(t.TempDir(), "replicator.yaml")
				if err := os.WriteFile(o.File, []byte(c.yaml), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if c.flags != nil {
				fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
				config.AddFlags(fs)
				if err := fs.Parse(c.flags); err != nil {
					t.Fatal(err)
				}
				o.Flags = fs
			}
			cfg, err := config.Load(o)
			if err != nil {
				t.Fatal(err)
			}
			opts, err := Options(cfg.Temporal)
			if err != nil {
				t.Fatal(err)
			}
			if opts.HostPort != c.want.address || opts.Namespace != c.want.namespace {
				t.Errorf("dials %s namespace %s, want %s namespace %s", opts.HostPort, opts.Namespace, c.want.address, c.want.namespace)
			}
			if got := opts.ConnectionOptions.TLS != nil; got != c.want.tls {
				t.Fatalf("TLS %v, want %v", got, c.want.tls)
			}
			if c.want.tls {
				if cfg.Temporal.TLS.CA != c.want.ca {
					t.Errorf("CA %q, want %q", cfg.Temporal.TLS.CA, c.want.ca)
				}
				if got := opts.ConnectionOptions.TLS.ServerName; got != c.want.serverName {
					t.Errorf("server name %q, want %q", got, c.want.serverName)
				}
				if opts.ConnectionOptions.TLS.InsecureSkipVerify {
					t.Errorf("host verification is off, and no variable asked for it")
				}
			}
			if got := opts.Credentials != nil; got != c.want.apiKey {
				t.Errorf("API key credentials %v, want %v", got, c.want.apiKey)
			}
		})
	}
}

// Values of the environment that cannot be used fail at start, naming the
// variable; PEM data for a key the file sets is not in the way.
func TestTemporalEnvironmentProblems(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		yaml string
		want string // in the error; "" : no error
	}{
		{map[string]string{"TEMPORAL_TLS": "sometimes"}, "temporal: {address: t.example:7233}\n", `TEMPORAL_TLS="sometimes": not true or false`},
		{map[string]string{"TEMPORAL_TLS_CLIENT_CERT_DATA": "-----BEGIN CERTIFICATE-----"}, "temporal: {address: t.example:7233}\n", "TEMPORAL_TLS_CLIENT_CERT_DATA: PEM data in the environment is not read"},
		{map[string]string{"TEMPORAL_TLS_CA_DATA": "-----BEGIN CERTIFICATE-----"}, "temporal: {address: t.example:7233, tls: {ca: /etc/ca.pem}}\n", ""},
		{map[string]string{"TEMPORAL_API_KEY": "k", "TEMPORAL_TLS": "false"}, "temporal: {address: t.example:7233}\n", "temporal.apiKey: an API key is sent only over TLS"},
		{map[string]string{"TEMPORAL_ADDRESS": "no-port"}, "temporal: {namespace: ops}\n", "(from TEMPORAL_ADDRESS)"},
		{nil, "temporal: {namespace: ops}\n", "temporal.address"},
	} {
		clearTemporalEnv(t)
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		_, err := load(t, c.yaml)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v", c.env, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: error %v, want one saying %q", c.env, err, c.want)
		}
	}
}

// TEMPORAL_API_KEY travels as a bearer token to a frontend found through
// TEMPORAL_ADDRESS and TEMPORAL_TLS_SERVER_CA_CERT_PATH; with
// TEMPORAL_TLS_DISABLE_HOST_VERIFICATION a certificate of another name is
// accepted, but never one of another CA.
func TestEnvironmentReachesTLSFrontend(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	// The frontend's certificate names another host than the one dialled.
	addr, got := serveTLSFrontend(t, ca, dir, "frontend.internal")

	reach := func(caFile, noVerify string) (string, error) {
		t.Helper()
		clearTemporalEnv(t)
		t.Setenv("TEMPORAL_ADDRESS", addr)
		t.Setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", caFile)
		t.Setenv("TEMPORAL_API_KEY", "k-env")
		t.Setenv("TEMPORAL_TLS_DISABLE_HOST_VERIFICATION", noVerify)
		cfg, err := load(t, "temporal: {taskQueue: replication}\n")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Dial's first call (GetSystemInfo) is the one the frontend records.
		c, err := Dial(cfg.Temporal, nil, nil)
		if err != nil {
			return "", err
		}
		defer c.Close()
		select {
		case auth := <-got:
			return auth, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if _, err := reach(ca.File, "false"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a certificate for frontend.internal, dialled as 127.0.0.1 with host verification on: %v", err)
	}
	auth, err := reach(ca.File, "true")
	if err != nil {
		t.Fatalf("host verification off, right CA: %v", err)
	}
	if auth != "Bearer k-env" {
		t.Errorf("authorization %q, want Bearer k-env", auth)
	}
	if _, err := reach(other.File, "true"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("host verification off, a certificate of another CA: %v", err)
	}
}
