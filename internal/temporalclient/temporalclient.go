// Package temporalclient builds the options with which every replicator
// process dials the Temporal frontend, from the temporal section of the
// configuration: TLS (server-authenticated with a CA alone or the system's
// roots, mutual with a client certificate), an API key, and the payload
// codec that keeps payloads encrypted in the cluster.
package temporalclient

import (
	"fmt"
	"net"
	"strings"

	"go.temporal.io/sdk/client"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/secretfile"
)

// maxAPIKeyBytes bounds the API key file.
const maxAPIKeyBytes = 64 << 10

// Options returns the client options of cfg (address, namespace, TLS, API
// key, data converter). Callers add their logger and metrics handler.
func Options(cfg config.Temporal) (client.Options, error) {
	opts := client.Options{HostPort: cfg.Address, Namespace: cfg.Namespace}
	if cfg.TLS.On() {
		serverName := cfg.TLS.ServerName
		if serverName == "" {
			if host, _, err := net.SplitHostPort(cfg.Address); err == nil {
				serverName = host
			}
		}
		t, err := pki.TemporalTLS(cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key, serverName)
		if err != nil {
			return client.Options{}, fmt.Errorf("temporal.tls: %w", err)
		}
		opts.ConnectionOptions.TLS = t
	}
	if cfg.APIKeyFile != "" {
		if opts.ConnectionOptions.TLS == nil {
			return client.Options{}, fmt.Errorf("temporal.apiKeyFile: an API key is sent only over TLS (set temporal.tls)")
		}
		key, err := secretfile.Read(cfg.APIKeyFile, maxAPIKeyBytes)
		if err != nil {
			return client.Options{}, fmt.Errorf("temporal.apiKeyFile: %w", err)
		}
		opts.Credentials = client.NewAPIKeyStaticCredentials(strings.TrimSpace(string(key)))
	}
	if cfg.CodecKeyFile != "" {
		codec, err := LoadCodec(cfg.CodecKeyFile)
		if err != nil {
			return client.Options{}, fmt.Errorf("temporal.codecKeyFile: %w", err)
		}
		opts.DataConverter = codec.DataConverter()
		opts.FailureConverter = codec.FailureConverter()
	}
	return opts, nil
}
