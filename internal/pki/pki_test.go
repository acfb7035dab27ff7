package pki

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEnsureDevCreatesThenReuses(t *testing.T) {
	dir := t.TempDir()
	f, err := EnsureDev(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.CA, f.Cert, f.Key, filepath.Join(dir, CAKeyFile)} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	before, _ := os.ReadFile(f.Cert)
	f2, err := EnsureDev(dir)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(f2.Cert)
	if f2 != f || string(before) != string(after) {
		t.Fatal("second EnsureDev did not reuse the certificates")
	}
	// A lost node certificate is issued again by the same CA.
	caBefore, _ := os.ReadFile(f.CA)
	os.Remove(f.Cert)
	if _, err := EnsureDev(dir); err != nil {
		t.Fatal(err)
	}
	caAfter, _ := os.ReadFile(f.CA)
	if string(caBefore) != string(caAfter) {
		t.Fatal("CA replaced when only the node certificate was missing")
	}
	handshake(t, f, f, "127.0.0.1", true)
	handshake(t, f, f, "localhost", true)
}

func TestOtherCARejected(t *testing.T) {
	good, err := EnsureDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := EnsureDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// A client certificate from another CA, presented with the right CA pool.
	stranger := Files{CA: good.CA, Cert: other.Cert, Key: other.Key}
	handshake(t, good, stranger, "127.0.0.1", false)
	// A client that trusts another CA refuses the server.
	handshake(t, good, other, "127.0.0.1", false)
}

func TestRolesAreChecked(t *testing.T) {
	dir, ca, issueFiles := testCA(t)
	issue := func(name string, roles ...Role) Files {
		f := issueFiles(name, roles...)
		f.CRL = filepath.Join(dir, CRLFile)
		return f
	}
	agent, proxy := issue("agent", RoleAgent), issue("proxy-hv01", RoleProxy)
	otherAgent, temporalClient := issue("agent-2", RoleAgent), issue("ops", RoleClient)
	if _, err := ca.Revoke(dir); err != nil { // an empty list to start with
		t.Fatal(err)
	}
	leaf, err := proxy.Leaf()
	if err != nil {
		t.Fatal(err)
	}
	if leaf.NotAfter.Sub(leaf.NotBefore) > DefaultValidity+2*time.Hour {
		t.Fatalf("certificate valid %s, want about %s", leaf.NotAfter.Sub(leaf.NotBefore), DefaultValidity)
	}
	sc, cc := dataChannelTLS(t, agent, proxy)
	if cn := handshakeWith(t, sc, cc, "127.0.0.1", true); cn != "proxy-hv01" {
		t.Fatalf("peer CN %q", cn)
	}
	// Certificates of the wrong role are refused on both sides, even
	// presented by hand without the role check of this package.
	if _, err := otherAgent.ClientTLS(); err == nil || !strings.Contains(err.Error(), "not proxy") {
		t.Fatalf("an agent certificate was accepted as a proxy's: %v", err)
	}
	if _, err := proxy.ServerTLS(); err == nil || !strings.Contains(err.Error(), "not agent") {
		t.Fatalf("a proxy certificate was accepted as an agent's: %v", err)
	}
	handshakeWith(t, sc, rawClient(t, otherAgent), "127.0.0.1", false)
	handshakeWith(t, sc, rawClient(t, temporalClient), "127.0.0.1", false)
	handshakeWith(t, rawServer(t, proxy), cc, "127.0.0.1", false)
	// A revoked proxy is refused at its next handshake, with the same
	// configuration (no restart).
	if _, err := ca.Revoke(dir, leaf.SerialNumber); err != nil {
		t.Fatal(err)
	}
	handshakeWith(t, sc, cc, "127.0.0.1", false)
	// A list not signed by the CA refuses everyone.
	otherDir := t.TempDir()
	other, err := NewCA(otherDir)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.Revoke(otherDir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(forged)
	if err := os.WriteFile(filepath.Join(dir, CRLFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := issue("proxy-2", RoleProxy).ClientTLS(); err == nil || !strings.Contains(err.Error(), "not signed by the CA") {
		t.Fatalf("a revocation list of another CA: %v", err)
	}
	if _, err := ca.Issue(dir, Request{Name: "../evil", Roles: []Role{RoleProxy}}); err == nil {
		t.Fatal("issued a certificate named ../evil")
	}
	if _, err := ca.Issue(dir, Request{Name: "none"}); err == nil {
		t.Fatal("issued a certificate without a role")
	}
}

// TestTemporalServerCertificate: the Temporal server's certificate serves
// its frontend and its internode mutual TLS (server and client
// authentication) but opens no data channel, and a worker dials the frontend
// only with a certificate that has client authentication (an agent's needs
// the client role beside its own).
func TestTemporalServerCertificate(t *testing.T) {
	_, _, issue := testCA(t)
	temporal := issue("temporal", RoleTemporal)
	agent, proxy := issue("agent", RoleAgent), issue("proxy", RoleProxy)
	agentClient := issue("agent-client", RoleAgent, RoleClient)
	leaf, err := temporal.Leaf()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Fatalf("temporal certificate's extended key usages %v, want server and client authentication", leaf.ExtKeyUsage)
	}
	if got := RolesOf(leaf); !slices.Equal(got, []Role{RoleTemporal}) {
		t.Fatalf("temporal certificate carries roles %v", got)
	}
	// Internode: the server's services dial each other with the one certificate.
	handshakeWith(t, rawServer(t, temporal), rawClient(t, temporal), "127.0.0.1", true)

	// The data channel refuses it on both sides: as its own configuration...
	if _, err := temporal.ServerTLS(); err == nil || !strings.Contains(err.Error(), "not agent") {
		t.Fatalf("the Temporal server's certificate serves the data channel: %v", err)
	}
	if _, err := temporal.ClientTLS(); err == nil || !strings.Contains(err.Error(), "not proxy") {
		t.Fatalf("the Temporal server's certificate sends to agents: %v", err)
	}
	// ...and presented by hand to a real agent and a real proxy.
	sc, cc := dataChannelTLS(t, agent, proxy)
	handshakeWith(t, sc, cc, "127.0.0.1", true)
	handshakeWith(t, sc, rawClient(t, temporal), "127.0.0.1", false)
	handshakeWith(t, rawServer(t, temporal), cc, "127.0.0.1", false)

	// The frontend (mutual TLS, clients of the CA) takes a proxy's and an
	// agent-and-client certificate; an agent's alone has no client
	// authentication.
	frontend := rawServer(t, temporal)
	for _, c := range []struct {
		f    Files
		want bool
	}{{proxy, true}, {agentClient, true}, {agent, false}} {
		handshakeWith(t, frontend, rawClient(t, c.f), "127.0.0.1", c.want)
		tc, err := TemporalTLS(c.f.CA, c.f.Cert, c.f.Key, "127.0.0.1")
		if !c.want {
			// Refused before dialling, with the way out.
			if err == nil || !strings.Contains(err.Error(), "no client authentication") || !strings.Contains(err.Error(), "--role client") {
				t.Fatalf("Temporal TLS with an agent-only certificate: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		handshakeWith(t, frontend, tc, "127.0.0.1", true)
	}
	// The agent-and-client certificate still serves the data channel and is
	// no proxy.
	if _, err := agentClient.ServerTLS(); err != nil {
		t.Fatal(err)
	}
	handshakeWith(t, sc, rawClient(t, agentClient), "127.0.0.1", false)
}

// rawClient presents f's certificate and trusts f's CA, with no role check.
func rawClient(t *testing.T, f Files) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(f.CA)
	pool.AppendCertsFromPEM(b)
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }}
}

// rawServer serves f's certificate and asks for clients of f's CA, with no role check.
func rawServer(t *testing.T, f Files) *tls.Config {
	t.Helper()
	c := rawClient(t, f)
	pair, _ := c.GetClientCertificate(nil)
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*pair}, ClientCAs: c.RootCAs, ClientAuth: tls.RequireAndVerifyClientCert}
}

// handshake runs a TLS handshake over loopback and returns the client's CN as
// the server saw it.
func handshake(t *testing.T, server, client Files, host string, wantOK bool) string {
	t.Helper()
	sc, cc := dataChannelTLS(t, server, client)
	return handshakeWith(t, sc, cc, host, wantOK)
}

// dataChannelTLS is the agent's (server's) and the proxy's (client's) TLS
// configurations.
func dataChannelTLS(t *testing.T, server, client Files) (sc, cc *tls.Config) {
	t.Helper()
	sc, err := server.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	cc, err = client.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	return sc, cc
}

func handshakeWith(t *testing.T, sc, cc *tls.Config, host string, wantOK bool) string {
	t.Helper()
	cc = cc.Clone()
	cc.ServerName = host
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		cn  string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer c.Close()
		tc := tls.Server(c, sc)
		if err := tc.Handshake(); err != nil {
			ch <- res{err: err}
			return
		}
		// TLS 1.3 clients learn of a rejected certificate on first read.
		_, err = io.WriteString(tc, "ok")
		ch <- res{cn: tc.ConnectionState().PeerCertificates[0].Subject.CommonName, err: err}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cc)
	if err == nil {
		buf := make([]byte, 2)
		_, err = io.ReadFull(c, buf)
		c.Close()
	}
	r := <-ch
	if wantOK && (err != nil || r.err != nil) {
		t.Fatalf("handshake failed: client %v, server %v", err, r.err)
	}
	if !wantOK && err == nil && r.err == nil {
		t.Fatal("handshake succeeded, want rejection")
	}
	return r.cn
}

// testCA is a new CA in a temporary folder, and a function that issues
// certificates with roles for 127.0.0.1 in that folder.
func testCA(t *testing.T) (dir string, ca *CA, issue func(name string, roles ...Role) Files) {
	t.Helper()
	dir = t.TempDir()
	ca, err := NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, ca, func(name string, roles ...Role) Files {
		t.Helper()
		f, err := ca.Issue(dir, Request{Name: name, Roles: roles, Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
}
