package temporalclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/pki"
)

// A CA alone turns TLS on (it used to stay plaintext unless a client
// certificate was set); an API key needs TLS; a codec key sets the data
// and failure converters.
func TestOptionsFromConfiguration(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := config.Temporal{Address: "temporal.example:7233", Namespace: "prod"}

	plain, err := Options(base)
	if err != nil || plain.ConnectionOptions.TLS != nil || plain.Credentials != nil || plain.DataConverter != nil {
		t.Fatalf("no TLS, key or codec configured: %+v %v", plain.ConnectionOptions.TLS, err)
	}

	caOnly := base
	caOnly.TLS.CA = ca.File
	o, err := Options(caOnly)
	if err != nil {
		t.Fatal(err)
	}
	if o.ConnectionOptions.TLS == nil || o.ConnectionOptions.TLS.RootCAs == nil || len(o.ConnectionOptions.TLS.Certificates) != 0 {
		t.Fatalf("CA alone: TLS %+v, want server-authenticated TLS with the CA", o.ConnectionOptions.TLS)
	}
	if o.ConnectionOptions.TLS.ServerName != "temporal.example" {
		t.Fatalf("server name %q, want the host of the address", o.ConnectionOptions.TLS.ServerName)
	}

	keyFile := filepath.Join(dir, "api.key")
	if err := os.WriteFile(keyFile, []byte("secret-api-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withKey := base
	withKey.APIKeyFile = keyFile
	if _, err := Options(withKey); err == nil || !strings.Contains(err.Error(), "only over TLS") {
		t.Fatalf("an API key without TLS: %v", err)
	}
	withKey.TLS.Enabled = true
	if o, err = Options(withKey); err != nil || o.Credentials == nil || o.ConnectionOptions.TLS == nil {
		t.Fatalf("API key over TLS: %v", err)
	}
	os.Chmod(keyFile, 0o644)
	if _, err := Options(withKey); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("an API key file others may read: %v", err)
	}

	codecKey := filepath.Join(dir, "codec.key")
	if err := os.WriteFile(codecKey, []byte(strings.Repeat("11", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	withCodec := base
	withCodec.CodecKeyFile = codecKey
	if o, err = Options(withCodec); err != nil || o.DataConverter == nil || o.FailureConverter == nil {
		t.Fatalf("codec: %v", err)
	}
}
