package config

import (
	"fmt"
	"strconv"
)

// The environment variables with which the Temporal CLI (and the SDKs'
// environment configuration) find a Temporal cluster. A configuration file
// that leaves a temporal key out takes it from them, so that a machine set
// up for `temporal` needs nothing more; whatever the file, a REPLICATOR_*
// variable or a flag sets wins. The built-in --dev configuration (no file)
// describes the embedded server on this machine and ignores them.
//
// Names and meanings: temporalio/cli v1.5.1, temporalcli/commandsgen/commands.yml
// (option set "client", each option's implied-env) and temporalcli/client.go,
// which also reads the older TEMPORAL_TLS_CERT, TEMPORAL_TLS_KEY and
// TEMPORAL_TLS_CA and lets them win over the newer names; documented at
// https://docs.temporal.io/references/client-environment-configuration.
const (
	EnvTemporalAddress    = "TEMPORAL_ADDRESS"
	EnvTemporalNamespace  = "TEMPORAL_NAMESPACE"
	EnvTemporalAPIKey     = "TEMPORAL_API_KEY"
	EnvTemporalTLS        = "TEMPORAL_TLS"
	EnvTemporalTLSCert    = "TEMPORAL_TLS_CLIENT_CERT_PATH"
	EnvTemporalTLSKey     = "TEMPORAL_TLS_CLIENT_KEY_PATH"
	EnvTemporalTLSCA      = "TEMPORAL_TLS_SERVER_CA_CERT_PATH"
	EnvTemporalServerName = "TEMPORAL_TLS_SERVER_NAME"
	EnvTemporalNoVerify   = "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION"
)

// temporalEnvStrings are the variables of string keys, each key's names in
// the order the CLI applies them (the last one set wins).
var temporalEnvStrings = []struct {
	path  string
	names []string
	field func(*Temporal) *string
}{
	{"temporal.address", []string{EnvTemporalAddress}, func(t *Temporal) *string { return &t.Address }},
	{"temporal.namespace", []string{EnvTemporalNamespace}, func(t *Temporal) *string { return &t.Namespace }},
	{"temporal.tls.cert", []string{EnvTemporalTLSCert, "TEMPORAL_TLS_CERT"}, func(t *Temporal) *string { return &t.TLS.Cert }},
	{"temporal.tls.key", []string{EnvTemporalTLSKey, "TEMPORAL_TLS_KEY"}, func(t *Temporal) *string { return &t.TLS.Key }},
	{"temporal.tls.ca", []string{EnvTemporalTLSCA, "TEMPORAL_TLS_CA"}, func(t *Temporal) *string { return &t.TLS.CA }},
	{"temporal.tls.serverName", []string{EnvTemporalServerName}, func(t *Temporal) *string { return &t.TLS.ServerName }},
}

// temporalEnvData are the CLI's variables that carry PEM data instead of a
// file name, which replicator does not take: set where the key they stand
// for is not, they are a problem rather than silently ignored.
var temporalEnvData = []struct{ path, name, instead string }{
	{"temporal.tls.cert", "TEMPORAL_TLS_CLIENT_CERT_DATA", EnvTemporalTLSCert},
	{"temporal.tls.cert", "TEMPORAL_TLS_CERT_DATA", EnvTemporalTLSCert},
	{"temporal.tls.key", "TEMPORAL_TLS_CLIENT_KEY_DATA", EnvTemporalTLSKey},
	{"temporal.tls.key", "TEMPORAL_TLS_KEY_DATA", EnvTemporalTLSKey},
	{"temporal.tls.ca", "TEMPORAL_TLS_SERVER_CA_CERT_DATA", EnvTemporalTLSCA},
	{"temporal.tls.ca", "TEMPORAL_TLS_CA_DATA", EnvTemporalTLSCA},
}

// temporalEnv applies the Temporal CLI's variables (read with lookup) to t,
// the temporal section before the file is decoded over it. It returns, for
// each key path a variable set, the variable's name, and the problems of
// values that cannot be used.
func temporalEnv(t *Temporal, lookup func(string) (string, bool)) (map[string]string, []Problem) {
	sources := map[string]string{}
	var problems []Problem
	get := func(name string) string {
		v, _ := lookup(name)
		return v
	}
	for _, s := range temporalEnvStrings {
		for _, name := range s.names {
			if v := get(name); v != "" {
				*s.field(t), sources[s.path] = v, name
			}
		}
	}
	boolean := func(path, name string, field *bool) {
		v := get(name)
		if v == "" {
			return
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			problems = append(problems, Problem{Path: path, Reason: fmt.Sprintf("%s=%q: not true or false (from %s)", name, v, name)})
			return
		}
		*field, sources[path] = b, name
	}
	boolean("temporal.tls.enabled", EnvTemporalTLS, &t.TLS.Enabled)
	boolean("temporal.tls.disableHostVerification", EnvTemporalNoVerify, &t.TLS.DisableHostVerification)
	if v := get(EnvTemporalAPIKey); v != "" {
		t.APIKey, sources["temporal.apiKey"] = v, EnvTemporalAPIKey
		// As the CLI does: an API key turns TLS on unless TEMPORAL_TLS says otherwise.
		if _, set := sources["temporal.tls.enabled"]; !set {
			t.TLS.Enabled, sources["temporal.tls.enabled"] = true, EnvTemporalAPIKey
		}
	}
	return sources, problems
}

// temporalEnvDataProblems reports the PEM-data variables set for a key
// that neither the file nor an override sets (set says which do).
func temporalEnvDataProblems(lookup func(string) (string, bool), set func(path string) bool) []Problem {
	var problems []Problem
	for _, d := range temporalEnvData {
		if v, _ := lookup(d.name); v != "" && !set(d.path) {
			problems = append(problems, Problem{Path: d.path,
				Reason: fmt.Sprintf("%s: PEM data in the environment is not read; name a file with %s or %s", d.name, d.path, d.instead)})
		}
	}
	return problems
}
