package guest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// events records, in order, what happened in the guest and around it.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, s)
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.list...)
}

// fakeCommand is how the fake guest answers one command.
type fakeCommand struct {
	exit   int
	stderr string
	block  bool // runs until the client gives up
}

// guestServer is an SSH server on 127.0.0.1 standing in for a Linux guest:
// it executes commands from a table and records them.
type guestServer struct {
	addr       string
	hostSigner ssh.Signer
	commands   map[string]fakeCommand
	ev         *events
	release    chan struct{}
}

const guestUser = "backup"

func newGuestServer(t *testing.T, ev *events, password string, clientKey ssh.PublicKey, commands map[string]fakeCommand) *guestServer {
	t.Helper()
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{
		PasswordCallback: func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			if password != "" && c.User() == guestUser && string(pw) == password {
				return nil, nil
			}
			return nil, errBadAuth
		},
		PublicKeyCallback: func(c ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if clientKey != nil && c.User() == guestUser && string(k.Marshal()) == string(clientKey.Marshal()) {
				return nil, nil
			}
			return nil, errBadAuth
		},
	}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &guestServer{addr: ln.Addr().String(), hostSigner: hostSigner, commands: commands, ev: ev, release: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(s.release)
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(conn, cfg)
			}()
		}
	}()
	return s
}

type authError string

func (e authError) Error() string { return string(e) }

const errBadAuth = authError("authentication refused")

func (s *guestServer) serve(conn net.Conn, cfg *ssh.ServerConfig) {
	defer conn.Close()
	sc, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	closed := make(chan struct{})
	go func() { sc.Wait(); close(closed) }()
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.session(ch, chReqs, closed)
		}()
	}
	wg.Wait()
}

func (s *guestServer) session(ch ssh.Channel, reqs <-chan *ssh.Request, closed <-chan struct{}) {
	defer ch.Close()
	for req := range reqs {
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			s.ev.add("guest: " + p.Command)
			c, ok := s.commands[p.Command]
			if !ok {
				c = fakeCommand{exit: 127, stderr: "sh: " + p.Command + ": not found\n"}
			}
			if c.block {
				go ssh.DiscardRequests(reqs) // a signal may come
				select {
				case <-s.release:
				case <-closed:
				}
				return
			}
			ch.Stderr().Write([]byte(c.stderr))
			ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(c.exit)}))
			return
		default:
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
}

// knownHostsFile writes a known_hosts file pinning key for addr.
func knownHostsFile(t *testing.T, addr string, key ssh.PublicKey) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, []byte(knownhosts.Line([]string{knownhosts.Normalize(addr)}, key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// clientKeyFile makes an ed25519 key and writes its private half as an OpenSSH key file.
func clientKeyFile(t *testing.T) (path string, pub ssh.PublicKey, pemText string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	pemText = string(pem.EncodeToMemory(block))
	path = filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(path, []byte(pemText), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return path, signer.PublicKey(), pemText
}

func writeSecret(t *testing.T, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// keyMaterial is the base64 body of a PEM key, which must never be shown.
func keyMaterial(pemText string) []string {
	var out []string
	for _, l := range strings.Split(pemText, "\n") {
		if l != "" && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	return out
}
