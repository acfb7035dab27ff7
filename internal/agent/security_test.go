package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/replica"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
)

const (
	secJob  = "demo"
	secSize = 1 << 20
	secBS   = 64 << 10
	secCP   = "cp-1"
)

// securityFixture is an agent serving its data channel over mutual TLS with
// certificates of every role, and two VMs whose restore points are open.
type securityFixture struct {
	a         *Agent
	datastore string
	addr      string
	certs     map[string]pki.Files // agent, proxy, agent-2, client
	tokens    map[string]string    // by VM id
	src       string               // a source disk image
}

func newSecurityFixture(t *testing.T, opts transfer.ReceiverOptions) *securityFixture {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	fx := &securityFixture{datastore: filepath.Join(dir, "datastore"), certs: map[string]pki.Files{}, tokens: map[string]string{}}
	for name, role := range map[string]pki.Role{"agent": pki.RoleAgent, "proxy": pki.RoleProxy, "agent-2": pki.RoleAgent, "client": pki.RoleClient, "temporal": pki.RoleTemporal} {
		f, err := ca.Issue(filepath.Join(dir, "pki"), pki.Request{Name: name, Roles: []pki.Role{role}, Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		fx.certs[name] = f
	}
	if fx.a, err = New(fx.datastore, "security test"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fx.a.Close() })
	ctx := context.Background()
	for _, vm := range []string{"vm-1", "vm-2"} {
		if _, err := fx.a.Prepare(ctx, secJob, contract.VM{ID: vm, Name: vm, Generation: 2,
			Disks: []contract.Disk{{ID: "0", VirtualSize: secSize, SectorSize: 512}}}); err != nil {
			t.Fatal(err)
		}
		begun, err := fx.a.Begin(ctx, contract.BeginInput{Job: secJob, VMID: vm, RunID: "run-1", CheckpointID: secCP, ChangeTracking: "full", BlockSize: secBS})
		if err != nil {
			t.Fatal(err)
		}
		if err := transfer.ValidToken(begun.Token); err != nil {
			t.Fatalf("Begin returned token %q: %v", begun.Token, err)
		}
		fx.tokens[vm] = begun.Token
	}
	if fx.tokens["vm-1"] == fx.tokens["vm-2"] {
		t.Fatal("two restore points got the same token")
	}
	serverTLS, err := fx.certs["agent"].ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fx.addr = ln.Addr().String()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	}
	transfertest.Serve(t, transfer.NewReceiver(fx.a, serverTLS, opts), ln)
	fx.src = filepath.Join(dir, "source.img")
	data := make([]byte, secSize)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(fx.src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return fx
}

// send sends the source disk to vm's open point with the given client TLS and token.
func (fx *securityFixture) send(t *testing.T, clientTLS *tls.Config, vm, token string) (transfer.Result, error) {
	t.Helper()
	img, err := transfertest.OpenImage(fx.src, []disk.Extent{{Offset: 0, Length: secSize}})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	s := &transfer.Sender{Address: fx.addr, TLS: clientTLS, DialTimeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.SendDisk(ctx, img, blockplan.Full(secSize, secBS, img.Allocated()), nil,
		transfer.SendOptions{Job: secJob, VMID: vm, DiskID: "0", CheckpointID: secCP, BlockSize: secBS, Token: token}, nil)
}

func (fx *securityFixture) proxyTLS(t *testing.T) *tls.Config {
	t.Helper()
	c, err := fx.certs["proxy"].ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// snapshot hashes every file of the datastore but the lock files, whose
// content names the holder.
func snapshot(t *testing.T, root string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "lock" || d.Name() == "readers" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[p] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(t *testing.T, before, after map[string][32]byte) {
	t.Helper()
	for p, h := range after {
		if b, ok := before[p]; !ok || b != h {
			t.Errorf("%s changed", p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s removed", p)
		}
	}
}

// rawClientTLS presents f's certificate with no role check of its own, as
// a forger would.
func rawClientTLS(t *testing.T, f pki.Files) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }}
}

// TestForgedClientsChangeNothing: an agent's certificate, a Temporal
// client's certificate, a proxy without the point's token and a proxy
// replaying another point's token are each refused before any byte of the
// replica changes, and the commit of the point they tried to complete
// refuses it; the proxy with the token writes it and commits it.
func TestForgedClientsChangeNothing(t *testing.T) {
	fx := newSecurityFixture(t, transfer.ReceiverOptions{})
	ctx := context.Background()
	cases := []struct {
		name  string
		tls   *tls.Config
		token string
		want  string
	}{
		{"agent certificate", rawClientTLS(t, fx.certs["agent-2"]), fx.tokens["vm-1"], "certificate"},
		{"Temporal client certificate", rawClientTLS(t, fx.certs["client"]), fx.tokens["vm-1"], "certificate"},
		{"Temporal server certificate", rawClientTLS(t, fx.certs["temporal"]), fx.tokens["vm-1"], "certificate"},
		{"proxy without the token", fx.proxyTLS(t), strings.Repeat("0", transfer.TokenLen), "session token refused"},
		{"proxy replaying another point's token", fx.proxyTLS(t), fx.tokens["vm-2"], "session token refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := snapshot(t, fx.datastore)
			_, err := fx.send(t, c.tls, "vm-1", c.token)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("transfer: %v, want a refusal mentioning %q", err, c.want)
			}
			sameSnapshot(t, before, snapshot(t, fx.datastore))
			if _, err := fx.a.Commit(ctx, secJob, "vm-1", secCP, 7); err == nil || !strings.Contains(err.Error(), "not complete") {
				t.Fatalf("commit after a refused transfer: %v, want it refused (disks not complete)", err)
			}
		})
	}
	// A new Begin gives a new token: the old one no longer opens the point.
	old := fx.tokens["vm-2"]
	begun, err := fx.a.Begin(ctx, contract.BeginInput{Job: secJob, VMID: "vm-2", RunID: "run-2", CheckpointID: secCP, ChangeTracking: "full", BlockSize: secBS})
	if err != nil {
		t.Fatal(err)
	}
	if begun.Token == old {
		t.Fatal("Begin returned the same token again")
	}
	if _, err := fx.send(t, fx.proxyTLS(t), "vm-2", old); err == nil || !strings.Contains(err.Error(), "session token refused") {
		t.Fatalf("a superseded token: %v", err)
	}
	// The proxy with the token writes the point; it commits and verifies.
	if _, err := fx.send(t, fx.proxyTLS(t), "vm-1", fx.tokens["vm-1"]); err != nil {
		t.Fatalf("the rightful transfer: %v", err)
	}
	point, err := fx.a.Commit(ctx, secJob, "vm-1", secCP, 7)
	if err != nil {
		t.Fatal(err)
	}
	r, err := fx.a.Store().Replica(secJob, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(ctx, point); err != nil {
		t.Fatalf("verify of the rightful point: %v", err)
	}
	// Replicas are private: files 0600, folders 0700.
	err = filepath.WalkDir(fx.datastore, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, info.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	exported := filepath.Join(t.TempDir(), "out.raw")
	if err := exportRaw(ctx, r, point, exported); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(fx.src)
	if got, _ := os.ReadFile(exported); !bytes.Equal(got, want) {
		t.Fatal("the committed point does not hold the source's bytes")
	}
}

// stalledConn never delivers what the server sends: a TLS handshake over it
// stops after the ClientHello.
type stalledConn struct {
	net.Conn
	closed chan struct{}
}

func (c *stalledConn) Read([]byte) (int, error) { <-c.closed; return 0, net.ErrClosed }
func (c *stalledConn) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return c.Conn.Close()
}

// TestIdleAndStalledClientsDoNotBlock: 64 idle TCP connections and 64 TLS
// handshakes stalled after the ClientHello do not keep a certified sender
// out: its transfer completes within a few seconds.
func TestIdleAndStalledClientsDoNotBlock(t *testing.T) {
	fx := newSecurityFixture(t, transfer.ReceiverOptions{})
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range 64 {
		c, err := net.Dial("tcp", fx.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for range 64 {
		raw, err := net.Dial("tcp", fx.addr)
		if err != nil {
			t.Fatal(err)
		}
		sc := &stalledConn{Conn: raw, closed: make(chan struct{})}
		conns = append(conns, sc)
		go tls.Client(sc, fx.proxyTLS(t)).Handshake() // sends its ClientHello, then waits forever
	}
	time.Sleep(300 * time.Millisecond) // let the agent accept them all
	start := time.Now()
	if _, err := fx.send(t, fx.proxyTLS(t), "vm-1", fx.tokens["vm-1"]); err != nil {
		t.Fatalf("certified transfer beside idle and stalled clients: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("certified transfer took %s beside idle and stalled clients", d)
	}
	if _, err := fx.a.Commit(context.Background(), secJob, "vm-1", secCP, 7); err != nil {
		t.Fatal(err)
	}
}

// TestNoProgressConnectionClosed: a sender that only repeats its position
// is cut off after the idle timeout, however often it speaks.
func TestNoProgressConnectionClosed(t *testing.T) {
	fx := newSecurityFixture(t, transfer.ReceiverOptions{IdleTimeout: time.Second})
	conn, err := tls.Dial("tcp", fx.addr, fx.proxyTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h := transfer.Hello{Version: transfer.Version, Job: secJob, VMID: "vm-1", DiskID: "0", CheckpointID: secCP, DiskSize: secSize, BlockSize: secBS, Token: fx.tokens["vm-1"]}
	if _, err := conn.Write(wireHello(h)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// "Passed" at position 0, again and again: no progress.
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := conn.Write(wireMsg('P', binary.BigEndian.AppendUint64(nil, 0))); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil || bytes.IndexByte(got, 'E') > 0 {
			break
		}
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("a connection that only repeats its position was kept open %s (idle timeout 1s)", d)
	}
	if !bytes.Contains(got, []byte("timeout")) {
		t.Fatalf("the agent ended the connection with %q, want a timeout", got)
	}
}

func exportRaw(ctx context.Context, r *replica.Replica, point, path string) error {
	return r.Materialize(ctx, point, "0", path, "raw")
}

// wireMsg frames a message of the data channel: type, u32 length, body.
func wireMsg(typ byte, body []byte) []byte {
	return append(binary.BigEndian.AppendUint32([]byte{typ}, uint32(len(body))), body...)
}

// wireHello encodes a version 3 Hello by hand (the protocol's layout:
// magic, version, flags, disk size, block size, names, token).
func wireHello(h transfer.Hello) []byte {
	b := append([]byte(transfer.Magic), binary.BigEndian.AppendUint16(nil, h.Version)...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(h.DiskSize))
	b = binary.BigEndian.AppendUint64(b, uint64(h.BlockSize))
	for _, s := range []string{h.Job, h.VMID, h.DiskID, h.CheckpointID, h.Token} {
		b = append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
	}
	return wireMsg('H', b)
}

// TestSlowReplicaDoesNotHoldUpOthers: an agent that must finish a retention
// merge of one replica before using it waits for that replica's readers (a
// `starter verify` or `export`), and meanwhile serves every other replica.
func TestSlowReplicaDoesNotHoldUpOthers(t *testing.T) {
	fx := newSecurityFixture(t, transfer.ReceiverOptions{})
	ctx := context.Background()
	vm2 := contract.VM{ID: "vm-2", Name: "vm-2", Generation: 2, Disks: []contract.Disk{{ID: "0", VirtualSize: secSize, SectorSize: 512}}}
	// Two points on vm-2.
	if _, err := fx.send(t, fx.proxyTLS(t), "vm-2", fx.tokens["vm-2"]); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.a.Commit(ctx, secJob, "vm-2", secCP, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.a.Prepare(ctx, secJob, vm2); err != nil {
		t.Fatal(err)
	}
	begun, err := fx.a.Begin(ctx, contract.BeginInput{Job: secJob, VMID: "vm-2", RunID: "run-2", CheckpointID: "cp-2", ChangeTracking: "full", BlockSize: secBS})
	if err != nil {
		t.Fatal(err)
	}
	img, err := transfertest.OpenImage(fx.src, []disk.Extent{{Offset: 0, Length: secSize}})
	if err != nil {
		t.Fatal(err)
	}
	s := &transfer.Sender{Address: fx.addr, TLS: fx.proxyTLS(t)}
	if _, err := s.SendDisk(ctx, img, blockplan.Full(secSize, secBS, img.Allocated()), nil,
		transfer.SendOptions{Job: secJob, VMID: "vm-2", DiskID: "0", CheckpointID: "cp-2", BlockSize: secBS, Token: begun.Token}, nil); err != nil {
		t.Fatal(err)
	}
	img.Close()
	if _, err := fx.a.Commit(ctx, secJob, "vm-2", "cp-2", 7); err != nil {
		t.Fatal(err)
	}
	fx.a.Close()

	// The merge of vm-2's oldest point recorded, as a writer that died
	// after recording it leaves it (the intent mergeOldest writes).
	metaPath := filepath.Join(fx.datastore, secJob, "vm-2", "replica.json")
	raw, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	points := meta["points"].([]any)
	if len(points) != 2 {
		t.Fatalf("%d points on vm-2, want 2", len(points))
	}
	next := points[1].(map[string]any)
	chain := next["disks"].([]any)[0].(map[string]any)["chain"].([]any)
	meta["points"] = points[1:]
	meta["merge"] = map[string]any{"point": next["id"], "disks": []any{map[string]any{"id": "0", "child": chain[0], "base": chain[1]}}}
	if raw, err = json.Marshal(meta); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(metaPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	// A reader holds vm-2's point open: the merge must wait for it.
	store, err := replica.Open(fx.datastore)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := store.Replica(secJob, "vm-2")
	if err != nil {
		t.Fatal(err)
	}
	reader, err := r2.OpenPoint("", "0")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := New(fx.datastore, "security test, second process")
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	slow := make(chan error, 1)
	go func() { _, err := a2.Prepare(ctx, secJob, vm2); slow <- err }()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-slow:
		t.Fatalf("vm-2 was prepared while a reader held it (%v): the merge did not wait", err)
	default:
	}
	start := time.Now()
	pos, err := a2.Positions(ctx, secJob, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("vm-1 waited %s for vm-2's merge", d)
	}
	if _, ok := pos["0"]; !ok {
		t.Fatalf("positions of vm-1: %v", pos)
	}
	reader.Close()
	select {
	case err := <-slow:
		if err != nil {
			t.Fatalf("vm-2 after its reader left: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("vm-2's merge did not finish after its reader left")
	}
	ps, err := r2.Points()
	if err != nil || len(ps) != 1 {
		t.Fatalf("points of vm-2 after the merge: %v %v", ps, err)
	}
	if _, err := r2.Verify(ctx, ps[0].ID); err != nil {
		t.Fatalf("verify after the merge: %v", err)
	}
}
