package temporalclient

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

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

// apiKeyServer is a frontend that records the authorization header of the
// first call and answers every call Unimplemented.
type apiKeyServer struct {
	workflowservice.UnimplementedWorkflowServiceServer
}

// serveTLSFrontend serves, until the test ends, a frontend on a loopback
// port presenting a certificate of ca for host (issued into dir) that answers
// every call Unimplemented. It returns its address and the authorization
// header of each call it receives.
func serveTLSFrontend(t *testing.T, ca *pki.CA, dir, host string) (string, <-chan string) {
	t.Helper()
	srvFiles, err := ca.Issue(dir, pki.Request{Name: "frontend", Roles: []pki.Role{pki.RoleTemporal}, Hosts: []string{host}})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(srvFiles.Cert, srvFiles.Key)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			got <- strings.Join(md.Get("authorization"), ",")
			return h(ctx, req)
		}))
	workflowservice.RegisterWorkflowServiceServer(srv, &apiKeyServer{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), got
}

// TestAPIKeyTravelsOverCAOnlyTLS dials a TLS frontend that presents a
// certificate of the configured CA, with no client certificate: the
// handshake succeeds and the API key arrives as a bearer token.
func TestAPIKeyTravelsOverCAOnlyTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	addr, got := serveTLSFrontend(t, ca, dir, "127.0.0.1")

	keyFile := filepath.Join(dir, "api.key")
	if err := os.WriteFile(keyFile, []byte("k-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := Options(config.Temporal{Address: addr, Namespace: "default",
		TLS: config.TemporalTLS{CA: ca.File}, APIKeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, opts)
	if err == nil {
		c.CheckHealth(ctx, &client.CheckHealthRequest{})
		c.Close()
	}
	select {
	case auth := <-got:
		if auth != "Bearer k-123" {
			t.Fatalf("authorization %q, want Bearer k-123", auth)
		}
	case <-ctx.Done():
		t.Fatalf("no call reached the TLS frontend (dial: %v)", err)
	}
}
