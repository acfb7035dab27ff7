package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
)

// sshGuest is a Linux guest as far as guest processing sees it: an SSH
// server on 127.0.0.1 that runs each command by sleeping for its duration
// and counts how often each ran.
type sshGuest struct {
	addr      string
	knownHost string
	mu        sync.Mutex
	ran       map[string]int
}

func startSSHGuest(t *testing.T, password string, commands map[string]time.Duration) *sshGuest {
	t.Helper()
	_, hostKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PasswordCallback: func(c ssh.ConnMetadata, p []byte) (*ssh.Permissions, error) {
		if c.User() == "backup" && string(p) == password {
			return nil, nil
		}
		return nil, errBadGuestAuth
	}}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	g := &sshGuest{addr: ln.Addr().String(), ran: map[string]int{}}
	g.knownHost = filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(g.knownHost, []byte(knownhosts.Line([]string{knownhosts.Normalize(g.addr)}, signer.PublicKey())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go g.serve(conn, cfg, commands)
		}
	}()
	return g
}

type guestAuthError string

func (e guestAuthError) Error() string { return string(e) }

const errBadGuestAuth = guestAuthError("authentication refused")

func (g *sshGuest) serve(conn net.Conn, cfg *ssh.ServerConfig, commands map[string]time.Duration) {
	defer conn.Close()
	_, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		ch, chReqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer ch.Close()
			for req := range chReqs {
				if req.Type != "exec" {
					if req.WantReply {
						req.Reply(false, nil)
					}
					continue
				}
				var p struct{ Command string }
				ssh.Unmarshal(req.Payload, &p)
				req.Reply(true, nil)
				g.mu.Lock()
				g.ran[p.Command]++
				g.mu.Unlock()
				status := uint32(127)
				if d, ok := commands[p.Command]; ok {
					time.Sleep(d)
					status = 0
				}
				ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
				return
			}
		}()
	}
}

func (g *sshGuest) count(cmd string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ran[cmd]
}

// A pre-freeze command that runs longer than the checkpoint activity's
// one-minute heartbeat timeout (65 s here, standing for the two minutes of
// an application's own freeze): the activity heartbeats while it runs, so
// the command runs once, one checkpoint is made on the simulated host, and
// the point is application-consistent without a second freeze by the host.
func TestHypervSimLongPreFreeze(t *testing.T) {
	const freeze, thaw = "app-freeze", "app-thaw"
	password := filepath.Join(t.TempDir(), "guest.password")
	if err := os.WriteFile(password, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	guestVM := startSSHGuest(t, "s3cret", map[string]time.Duration{freeze: 65 * time.Second, thaw: 0})
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		simulated(0, false)(c)
		g := &c.Jobs[0].GuestProcessing
		g.Enabled, g.Timeout = true, 3*time.Minute
		g.PreFreeze, g.PostThaw = []string{freeze}, []string{thaw}
		g.SSH = config.SSH{User: "backup", PasswordFile: password, KnownHosts: guestVM.knownHost}
		g.Guests = map[string]string{"web01": guestVM.addr}
	})
	res := h.run(contract.ReplicationInput{Job: "demo", VMs: []string{"web01"}})
	requireSuccess(t, res)
	if n := guestVM.count(freeze); n != 1 {
		t.Fatalf("the pre-freeze command ran %d times, want once", n)
	}
	if n := guestVM.count(thaw); n != 1 {
		t.Fatalf("the post-thaw command ran %d times, want once", n)
	}
	h.checkReplicaMatchesSource(res)
	requireOneReferencePoint(t, h, res)
}
