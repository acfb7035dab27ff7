package activities

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/transfer"
)

// failbackTLS issues an agent, a proxy and a Temporal client certificate.
func failbackTLS(t *testing.T) (agent, proxy, client pki.Files) {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string, role pki.Role) pki.Files {
		f, err := ca.Issue(dir, pki.Request{Name: name, Roles: []pki.Role{role}, Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	return issue("dr01", pki.RoleAgent), issue("proxy1", pki.RoleProxy), issue("admin", pki.RoleClient)
}

// The agent's failback channel hands the sender only a connection from a
// proxy certificate that presents the channel's token; a wrong token or
// another role gets nothing, and a connection after the send ended is told
// the outcome.
func TestFailbackChannelAdmitsOnlyTheProxyWithItsToken(t *testing.T) {
	agentFiles, proxyFiles, clientFiles := failbackTLS(t)
	serverTLS, err := agentFiles.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	proxyTLS, err := proxyFiles.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	proxyTLS.ServerName = "127.0.0.1"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	token := strings.Repeat("ab", tokenBytes)
	c := &failbackChannel{addr: ln.Addr().String(), token: token, ln: ln, tls: serverTLS, log: slog.New(slog.DiscardHandler),
		conns: make(chan net.Conn), pending: make(chan struct{}, failbackPending), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.accept(ctx)
	// While the refused connections are tried, whatever reaches the sender
	// is recorded (and closed, so that the dial returns at once).
	given := make(chan struct{}, 16)
	spyCtx, stopSpy := context.WithCancel(ctx)
	spyDone := make(chan struct{})
	go func() {
		defer close(spyDone)
		for {
			select {
			case conn := <-c.conns:
				given <- struct{}{}
				conn.Close()
			case <-spyCtx.Done():
				return
			}
		}
	}()
	noConn := func(what string) {
		t.Helper()
		time.Sleep(100 * time.Millisecond)
		if len(given) > 0 {
			t.Fatalf("%s: the sender was given a connection", what)
		}
	}

	if _, _, err := dialFailback(ctx, c.addr, proxyTLS, strings.Repeat("cd", tokenBytes)); err == nil {
		t.Fatal("a wrong token got an answer")
	}
	noConn("wrong token")

	// A Temporal client's or an agent's certificate is not a proxy's, even
	// with the token: refused in the handshake.
	clientCert, err := tls.LoadX509KeyPair(clientFiles.Cert, clientFiles.Key)
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]tls.Certificate{"client": clientCert, "agent": serverTLS.Certificates[0]} {
		cfg := proxyTLS.Clone()
		cfg.Certificates = []tls.Certificate{cert}
		if _, _, err := dialFailback(ctx, c.addr, cfg, token); err == nil {
			t.Fatalf("a %s certificate opened the channel", name)
		}
		noConn(name + " certificate")
	}

	stopSpy()
	<-spyDone

	// The proxy with the token: the sender takes the connection and says a
	// disk follows.
	got := make(chan error, 1)
	go func() {
		conn, err := c.next(ctx)
		if err == nil {
			conn.Close()
		}
		got <- err
	}()
	conn, status, err := dialFailback(ctx, c.addr, proxyTLS, token)
	if err != nil || status != failbackDisk {
		t.Fatalf("the proxy with the token: status %q, %v", status, err)
	}
	conn.Close()
	if err := <-got; err != nil {
		t.Fatal(err)
	}

	// The send ended: a later connection learns it is complete.
	close(c.done)
	conn, status, err = dialFailback(ctx, c.addr, proxyTLS, token)
	if err != nil || status != failbackFinished {
		t.Fatalf("after the send: status %q, %v", status, err)
	}
	conn.Close()
}

// The proxy dials the configured target's host, whatever host the input
// names, and its receiver admits only the channel's VM and token.
func TestFailbackProxySide(t *testing.T) {
	addr, host, err := failbackAddress("dr01.example:7300", "attacker.example:40123")
	if err != nil || addr != "dr01.example:40123" || host != "dr01.example" {
		t.Fatalf("address %q host %q: %v", addr, host, err)
	}
	for _, bad := range []string{"nohost", "x:0", "x:65536", "x:port"} {
		if _, _, err := failbackAddress("dr01:7300", bad); err == nil {
			t.Errorf("channel address %q accepted", bad)
		}
	}
	token := strings.Repeat("ab", tokenBytes)
	tgt := &failbackTarget{vmID: "vm-1", token: token}
	if err := tgt.Admit(context.Background(), transfer.Hello{VMID: "vm-1", Token: token}, "dr01"); err != nil {
		t.Fatal(err)
	}
	if err := tgt.Admit(context.Background(), transfer.Hello{VMID: "vm-2", Token: token}, "dr01"); err == nil {
		t.Error("another VM admitted")
	}
	if err := tgt.Admit(context.Background(), transfer.Hello{VMID: "vm-1", Token: strings.Repeat("cd", tokenBytes)}, "dr01"); err == nil {
		t.Error("another token admitted")
	}
	if validToken("short") || validToken(strings.Repeat("zz", tokenBytes)) || !validToken(token) {
		t.Error("validToken")
	}
}
