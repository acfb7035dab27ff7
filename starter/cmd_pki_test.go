package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/pki"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s holds no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// TestPKIInitIssueHandshake creates a CA and two node folders with the
// commands, then runs a mutual-TLS handshake between them the way a proxy
// dials an agent by its compose service name.
func TestPKIInitIssueHandshake(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	if out, err := runStarter(t, "pki", "init", dir); err != nil {
		t.Fatalf("pki init: %v\n%s", err, out)
	}
	if out, err := runStarter(t, "pki", "issue", dir, "agent", "--role", "agent", "--host", "agent", "--host", "10.0.0.7"); err != nil {
		t.Fatalf("pki issue agent: %v\n%s", err, out)
	}
	if out, err := runStarter(t, "pki", "issue", dir, "norole"); err == nil || !strings.Contains(out+err.Error(), "--role is required") {
		t.Fatalf("pki issue without --role: %v\n%s", err, out)
	}
	out, err := runStarter(t, "pki", "issue", dir, "worker", "--role", "proxy")
	if err != nil {
		t.Fatalf("pki issue worker: %v\n%s", err, out)
	}
	// The Temporal server's certificate: its own role, no data-channel one.
	if out, err := runStarter(t, "pki", "issue", dir, "temporal", "--role", "temporal", "--host", "temporal"); err != nil {
		t.Fatalf("pki issue temporal: %v\n%s", err, out)
	}
	if got := pki.RolesOf(readCert(t, filepath.Join(dir, "temporal", "node.pem"))); !slices.Equal(got, []pki.Role{pki.RoleTemporal}) {
		t.Fatalf("temporal/node.pem carries roles %v, want [temporal]", got)
	}
	if want := filepath.Join(dir, "worker", "node-key.pem"); !strings.Contains(out, want) {
		t.Fatalf("pki issue prints the tls keys to set; want %s in:\n%s", want, out)
	}

	for _, name := range []string{"agent", "worker"} {
		entries, err := os.ReadDir(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.Name())
		}
		if strings.Join(got, ",") != "ca.pem,node-key.pem,node.pem" {
			t.Fatalf("%s/ holds %v, want exactly ca.pem, node.pem, node-key.pem (no CA key)", name, got)
		}
		if fi, err := os.Stat(filepath.Join(dir, name, "node-key.pem")); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s/node-key.pem is readable by others: %v %v", name, fi.Mode(), err)
		}
		if cn := readCert(t, filepath.Join(dir, name, "node.pem")).Subject.CommonName; cn != name {
			t.Fatalf("%s/node.pem common name %q, want %q", name, cn, name)
		}
	}
	agentCert := readCert(t, filepath.Join(dir, "agent", "node.pem"))
	if err := agentCert.VerifyHostname("agent"); err != nil {
		t.Fatalf("agent certificate: %v", err)
	}
	if err := agentCert.VerifyHostname("10.0.0.7"); err != nil {
		t.Fatalf("agent certificate: %v", err)
	}

	agent := pki.Files{CA: filepath.Join(dir, "agent", "ca.pem"), Cert: filepath.Join(dir, "agent", "node.pem"), Key: filepath.Join(dir, "agent", "node-key.pem")}
	worker := pki.Files{CA: filepath.Join(dir, "worker", "ca.pem"), Cert: filepath.Join(dir, "worker", "node.pem"), Key: filepath.Join(dir, "worker", "node-key.pem")}
	serverTLS, err := agent.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := worker.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	clientTLS.ServerName = "agent"

	serverSide, clientSide := net.Pipe()
	defer serverSide.Close()
	defer clientSide.Close()
	peer := make(chan string, 1)
	go func() {
		conn := tls.Server(serverSide, serverTLS)
		if err := conn.HandshakeContext(context.Background()); err != nil {
			peer <- "handshake: " + err.Error()
			return
		}
		peer <- conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	if err := tls.Client(clientSide, clientTLS).HandshakeContext(context.Background()); err != nil {
		t.Fatalf("worker dialing agent: %v", err)
	}
	if got := <-peer; got != "worker" {
		t.Fatalf("agent sees peer %q, want worker", got)
	}
}

func TestPKIRefusesToReplace(t *testing.T) {
	dir := t.TempDir()
	if out, err := runStarter(t, "pki", "init", dir); err != nil {
		t.Fatalf("pki init: %v\n%s", err, out)
	}
	caBefore, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runStarter(t, "pki", "init", dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "ca.pem")) {
		t.Fatalf("second pki init: %v, want a refusal naming ca.pem", err)
	}
	if out, err := runStarter(t, "pki", "issue", dir, "agent", "--role", "agent", "--host", "agent"); err != nil {
		t.Fatalf("pki issue: %v\n%s", err, out)
	}
	keyBefore, err := os.ReadFile(filepath.Join(dir, "agent", "node-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runStarter(t, "pki", "issue", dir, "agent", "--role", "agent"); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "agent")) {
		t.Fatalf("second pki issue agent: %v, want a refusal naming the folder", err)
	}
	// A name that would collide with the CA's files inside DIR is a folder of its own.
	if out, err := runStarter(t, "pki", "issue", dir, "ca", "--role", "proxy"); err != nil {
		t.Fatalf("pki issue ca: %v\n%s", err, out)
	}
	for _, c := range []struct {
		path string
		want []byte
	}{
		{filepath.Join(dir, "ca.pem"), caBefore},
		{filepath.Join(dir, "agent", "node-key.pem"), keyBefore},
	} {
		if got, err := os.ReadFile(c.path); err != nil || string(got) != string(c.want) {
			t.Fatalf("%s changed (%v)", c.path, err)
		}
	}

	for _, bad := range [][]string{
		{"pki", "issue", dir, "../escape", "--role", "agent"},
		{"pki", "issue", dir, ".hidden", "--role", "agent"},
		{"pki", "issue", dir, "agent2", "--host", "agent:7300", "--role", "agent"},
		{"pki", "issue", dir, "agent3", "--host", "https://agent", "--role", "agent"},
		{"pki", "issue", filepath.Join(dir, "no-ca"), "agent4", "--role", "agent"},
	} {
		if _, err := runStarter(t, bad...); err == nil {
			t.Fatalf("%v succeeded", bad)
		}
	}
	for _, name := range []string{"escape", ".hidden", "agent2", "agent3"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Fatalf("refused issue left %s behind", name)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); err == nil {
		t.Fatal("pki issue ../escape wrote outside DIR")
	}
}

// TestPKIRenewRevoke renews a proxy's certificate (same name, roles, hosts;
// a new key) and revokes the old one: the CA's list names the old serial,
// not the new one, and a proxy configuration with the list still loads.
func TestPKIRenewRevoke(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	if out, err := runStarter(t, "pki", "init", dir); err != nil {
		t.Fatalf("pki init: %v\n%s", err, out)
	}
	if out, err := runStarter(t, "pki", "issue", dir, "worker", "--role", "proxy", "--days", "30"); err != nil {
		t.Fatalf("pki issue: %v\n%s", err, out)
	}
	certPath := filepath.Join(dir, "worker", "node.pem")
	old := readCert(t, certPath)
	if d := old.NotAfter.Sub(old.NotBefore); d > 31*24*time.Hour {
		t.Fatalf("--days 30 gave a certificate valid %s", d)
	}
	if out, err := runStarter(t, "pki", "issue", dir, "long", "--role", "proxy", "--days", "4000"); err == nil {
		t.Fatalf("a certificate of 4000 days was issued:\n%s", out)
	}
	if out, err := runStarter(t, "pki", "renew", dir, "worker", "--revoke-old"); err != nil {
		t.Fatalf("pki renew: %v\n%s", err, out)
	}
	renewed := readCert(t, certPath)
	if renewed.SerialNumber.Cmp(old.SerialNumber) == 0 || renewed.Subject.CommonName != "worker" {
		t.Fatalf("renewed certificate: serial %x (old %x), CN %q", renewed.SerialNumber, old.SerialNumber, renewed.Subject.CommonName)
	}
	if !pki.HasRole(renewed, pki.RoleProxy) || pki.HasRole(renewed, pki.RoleAgent) {
		t.Fatalf("renewed certificate has roles %v, want [proxy]", pki.RolesOf(renewed))
	}
	ca := readCert(t, filepath.Join(dir, "ca.pem"))
	list, err := pki.ReadCRL(filepath.Join(dir, pki.CRLFile), ca)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.RevokedCertificateEntries) != 1 || list.RevokedCertificateEntries[0].SerialNumber.Cmp(old.SerialNumber) != 0 {
		t.Fatalf("revocation list %v, want exactly the old serial %x", list.RevokedCertificateEntries, old.SerialNumber)
	}
	f := pki.Files{CA: filepath.Join(dir, "worker", "ca.pem"), Cert: certPath, Key: filepath.Join(dir, "worker", "node-key.pem"), CRL: filepath.Join(dir, pki.CRLFile)}
	if _, err := f.ClientTLS(); err != nil {
		t.Fatalf("the renewed folder does not load: %v", err)
	}
	if out, err := runStarter(t, "pki", "revoke", dir, "--serial", renewed.SerialNumber.Text(16)); err != nil {
		t.Fatalf("pki revoke --serial: %v\n%s", err, out)
	}
	if list, err = pki.ReadCRL(filepath.Join(dir, pki.CRLFile), ca); err != nil || len(list.RevokedCertificateEntries) != 2 {
		t.Fatalf("after a second revocation the list holds %d entries (%v)", len(list.RevokedCertificateEntries), err)
	}
}
