package pki

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
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

func TestClientAndServerCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.IssueServer(dir, "agent", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.IssueClient(dir, "proxy-hv01")
	if err != nil {
		t.Fatal(err)
	}
	if cn := handshake(t, srv, cli, "127.0.0.1", true); cn != "proxy-hv01" {
		t.Fatalf("peer CN %q", cn)
	}
	// A server certificate cannot act as a client.
	handshake(t, srv, srv, "127.0.0.1", false)
	if _, err := ca.IssueClient(dir, "../evil"); err == nil {
		t.Fatal("issued a certificate named ../evil")
	}
}

// handshake runs a TLS handshake over loopback and returns the client's CN as
// the server saw it.
func handshake(t *testing.T, server, client Files, host string, wantOK bool) string {
	t.Helper()
	sc, err := server.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := client.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
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
