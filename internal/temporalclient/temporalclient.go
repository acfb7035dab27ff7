// Package temporalclient connects every replicator process (workers and
// starter) to the Temporal frontend, from the temporal section of the
// configuration (which takes what its file leaves out from the Temporal
// CLI's TEMPORAL_* variables, see config/temporalenv.go): TLS
// (server-authenticated with a CA alone or the system's roots, mutual with a
// client certificate), an API key, and the payload codec that keeps payloads
// encrypted in the cluster.
package temporalclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

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
		if cfg.TLS.DisableHostVerification {
			skipHostVerification(t)
		}
		opts.ConnectionOptions.TLS = t
	}
	switch {
	case cfg.APIKeyFile != "":
		if opts.ConnectionOptions.TLS == nil {
			return client.Options{}, fmt.Errorf("temporal.apiKeyFile: an API key is sent only over TLS (set temporal.tls)")
		}
		key, err := secretfile.Read(cfg.APIKeyFile, maxAPIKeyBytes)
		if err != nil {
			return client.Options{}, fmt.Errorf("temporal.apiKeyFile: %w", err)
		}
		opts.Credentials = client.NewAPIKeyStaticCredentials(strings.TrimSpace(string(key)))
	case cfg.APIKey != "":
		if opts.ConnectionOptions.TLS == nil {
			return client.Options{}, fmt.Errorf("TEMPORAL_API_KEY: an API key is sent only over TLS (TEMPORAL_TLS is false)")
		}
		opts.Credentials = client.NewAPIKeyStaticCredentials(strings.TrimSpace(cfg.APIKey))
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

// skipHostVerification makes t accept a frontend certificate whatever name
// it carries (TEMPORAL_TLS_DISABLE_HOST_VERIFICATION, the Temporal CLI's
// --tls-disable-host-verification), but still only one that chains to the
// CA (or the system's roots): crypto/tls's InsecureSkipVerify alone would
// accept any certificate at all.
func skipHostVerification(t *tls.Config) {
	roots := t.RootCAs
	t.InsecureSkipVerify = true
	t.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the Temporal frontend presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		return err
	}
}

// Dial connects to the Temporal frontend of cfg with logger and metrics
// (nil: the SDK's defaults). The error names the address and namespace.
func Dial(cfg config.Temporal, logger sdklog.Logger, metrics client.MetricsHandler) (client.Client, error) {
	opts, err := Options(cfg)
	if err != nil {
		return nil, err
	}
	opts.Logger, opts.MetricsHandler = logger, metrics
	c, err := client.Dial(opts)
	if err != nil {
		return nil, fmt.Errorf("connecting to Temporal at %s (namespace %s): %w", cfg.Address, cfg.Namespace, err)
	}
	return c, nil
}
