package config

import (
	"fmt"

	"github.com/spf13/pflag"
)

// keyUsage describes each key that a flag can override.
var keyUsage = map[string]string{
	"temporal.address":                 "Temporal frontend, host:port",
	"temporal.namespace":               "Temporal namespace",
	"temporal.taskQueue":               "task queue of job workflows",
	"temporal.tls.ca":                  "PEM file of the CA of the Temporal frontend",
	"temporal.tls.cert":                "PEM client certificate for the Temporal frontend",
	"temporal.tls.key":                 "PEM key of the Temporal client certificate",
	"temporal.tls.enabled":             "TLS to the Temporal frontend with the system's roots",
	"temporal.tls.serverName":          "name the Temporal frontend's certificate must carry",
	"temporal.apiKeyFile":              "file holding the API key for the Temporal frontend",
	"temporal.codecKeyFile":            "file holding the AES-256 key of the payload codec",
	"tls.crl":                          "PEM revocation list of the data channel's CA",
	"agent.name":                       "target this process's agent serves",
	"agent.listen":                     "address the agent's data channel listens on, host:port",
	"agent.datastore":                  "folder of the replicas",
	"agent.encryptionKeyFile":          "file holding the datastore's key for encryption at rest",
	"agent.host.name":                  "name of the target's own host where replica VMs are registered",
	"agent.host.provider":              "provider of the target's host: lab or hyperv",
	"agent.host.path":                  "lab folder, or WMI host of the target's Hyper-V host",
	"agent.host.username":              "user for a remote Hyper-V target host",
	"agent.host.passwordFile":          "file holding the password of agent.host.username",
	"agent.host.simulator.jobDelay":    "simulated Hyper-V only: how long the simulator's WMI jobs run",
	"agent.host.simulator.jobWarnings": "simulated Hyper-V only: the simulator's jobs complete with warnings",
	"tls.ca":                           "PEM file of the CA of the data channel",
	"tls.cert":                         "PEM certificate of this process on the data channel",
	"tls.key":                          "PEM key of this process on the data channel",
	"metrics.listen":                   "address of the Prometheus metrics, host:port (empty: none)",
	"notify.webhook":                   "URL that receives each run's summary as JSON",
	"notify.smtp.address":              "mail server of the run summaries, host:port",
	"notify.smtp.from":                 "sender of the run summaries",
	"notify.smtp.username":             "user name on the mail server",
	"notify.smtp.passwordFile":         "file holding the mail server password",
}

// AddFlags defines a string flag for every key of OverrideKeys, named by its
// key path (--temporal.address, --agent.listen, --metrics.listen, …). The
// flags have no default of their own: Load applies only those that were set.
// Flags already defined under those names are left alone.
func AddFlags(fs *pflag.FlagSet) {
	for _, key := range OverrideKeys() {
		if fs.Lookup(key) != nil {
			continue
		}
		fs.String(key, "", fmt.Sprintf("%s (overrides the configuration and %s)", keyUsage[key], EnvName(key)))
	}
}
