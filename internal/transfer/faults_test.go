package transfer_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/codec"
	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/testkit"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
	"github.com/replicator/replicator/internal/zeros"
)

// TestReceiverKilled kills the agent process with SIGKILL mid-transfer,
// several times, restarts it, and resumes: the replica must be identical.
func TestReceiverKilled(t *testing.T) {
	_, client, files := testPKI(t)
	pkiDir := filepath.Dir(files.CA)
	const bs = 64 << 10
	src := makeSource(t, t.TempDir(), 24<<20+512, bs, 11)
	targetDir := t.TempDir()
	target := &transfertest.Target{Dir: targetDir}
	if err := target.Begin(testJob, testVM, testCP); err != nil {
		t.Fatal(err)
	}

	var addr atomic.Value
	var proc *exec.Cmd
	start := func() {
		out := filepath.Join(t.TempDir(), "addr")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envReceiverDir+"="+targetDir, envReceiverPKI+"="+pkiDir, envReceiverOut+"="+out)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for {
			b, err := os.ReadFile(out)
			if err == nil {
				addr.Store(string(b))
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		proc = cmd
	}
	start()
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	proxy := newCutProxy(t, func() string { return addr.Load().(string) }, func() int64 { return -1 })

	acks := make(chan int64, 1000)
	s := &transfer.Sender{Address: proxy.addr(), TLS: client}
	type outcome struct {
		res transfer.Result
		err error
	}
	done := make(chan outcome, 1)
	opts := options(bs)
	opts.Compression = codec.Optimal
	go func() {
		r, err := s.SendDiskWithRetry(context.Background(), src.open(t), nil, nil, opts,
			func(p transfer.Progress) {
				select {
				case acks <- p.Acknowledged:
				default:
				}
			},
			transfer.RetryPolicy{Attempts: 200, Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
		done <- outcome{r, err}
	}()

	r := rand.New(rand.NewPCG(4, 5))
	kills := 0
	thresholds := []int64{src.size / 8, src.size / 3, src.size * 2 / 3}
	var res outcome
wait:
	for {
		select {
		case res = <-done:
			break wait
		case a := <-acks:
			if kills < len(thresholds) && a >= thresholds[kills] {
				time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
				proc.Process.Signal(os.Kill)
				proc.Wait()
				kills++
				start()
			}
		}
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	if kills == 0 {
		t.Fatal("the receiver was never killed; the test did not exercise recovery")
	}
	plan := blockplan.Full(src.size, bs, src.allocated)
	checkReplica(t, target, hello(src.size, bs), expected(t, src.path, nil), plan)
	t.Logf("%d kills; result %+v", kills, res.res)
}

// rawSession is a hand-written client: TLS, Hello, and the reply.
type rawSession struct {
	conn *tls.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, addr string, client *tls.Config, h transfer.Hello) *rawSession {
	t.Helper()
	c := client.Clone()
	c.ServerName = "127.0.0.1"
	conn, err := tls.Dial("tcp", addr, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write(transfer.EncodeHello(h)); err != nil {
		t.Fatal(err)
	}
	return &rawSession{conn: conn, br: bufio.NewReader(conn)}
}

// agentError reads until the agent's error message and returns it.
func (s *rawSession) agentError(t *testing.T) string {
	t.Helper()
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		typ, body, err := transfer.ReadMessage(s.br)
		if err != nil {
			t.Fatalf("no error message from the agent: %v", err)
		}
		if typ == transfer.MsgError {
			_, msg, err := transfer.DecodeError(body)
			if err != nil {
				t.Fatal(err)
			}
			return msg
		}
	}
}

func TestCorruptFramesRejected(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs, size = 64 << 10, 1 << 20
	good := make([]byte, bs)
	for i := range good {
		good[i] = byte(i * 7)
	}
	goodSum := digest.Of(good)
	flipped := append([]byte{}, good...)
	flipped[1000] ^= 0x10
	zc, _ := codec.New(codec.Optimal)
	_, compressed := zc.Encode(nil, good)
	compressed = append([]byte{}, compressed...)
	badZstd := append([]byte{}, compressed...)
	badZstd[len(badZstd)/2] ^= 0xff

	type frame = transfer.TestFrame
	cases := []struct {
		name    string
		f       frame
		payload []byte
		want    string
	}{
		{"bit flip", frame{Offset: bs, RawLength: bs, PayloadLen: bs, Sum: goodSum}, flipped, "checksum mismatch"},
		{"offset past the end", frame{Offset: size, RawLength: bs, PayloadLen: bs, Sum: goodSum}, good, "outside the disk"},
		{"misaligned offset", frame{Offset: bs + 512, RawLength: bs, PayloadLen: bs, Sum: goodSum}, good, "not a multiple of the block size"},
		{"raw length beyond block", frame{Offset: bs, RawLength: 2 * bs, PayloadLen: bs, Sum: goodSum}, good, "raw length"},
		{"oversized payload length", frame{Offset: bs, RawLength: bs, PayloadLen: 1 << 30, Sum: goodSum}, nil, "length"},
		{"bad codec tag", frame{Offset: bs, RawLength: bs, Codec: 7, PayloadLen: bs, Sum: goodSum}, good, "codec tag 7"},
		{"corrupt zstd", frame{Offset: bs, RawLength: bs, Codec: codec.TagZstd, PayloadLen: uint32(len(badZstd)), Sum: goodSum}, badZstd, "frame at offset 65536"},
		{"descending offset", frame{Offset: 0, RawLength: bs, PayloadLen: bs, Sum: goodSum}, good, "below the position"},
		{"zero frame with payload", frame{Offset: bs, RawLength: bs, Flags: transfer.FrameZero, PayloadLen: bs, Sum: digest.Zero(bs)}, good, "carries a payload"},
		{"zero frame with wrong sum", frame{Offset: bs, RawLength: bs, Flags: transfer.FrameZero, Sum: goodSum}, nil, "not that of zeros"},
		// Partial frames (version 2): 64 KiB blocks have 16 parts of 4 KiB.
		{"partial frame with no parts", frame{Offset: bs, RawLength: bs, Flags: transfer.FramePartial, PayloadLen: 4096, Sum: goodSum}, good[:4096], "are not parts of a block"},
		{"partial frame with parts past the block", frame{Offset: bs, RawLength: bs, Flags: transfer.FramePartial, Parts: 1 << 16, PayloadLen: 4096, Sum: goodSum}, good[:4096], "are not parts of a block"},
		{"partial payload longer than its parts", frame{Offset: bs, RawLength: bs, Flags: transfer.FramePartial, Parts: 1, PayloadLen: 8192, Sum: goodSum}, good[:8192], "payload of 8192 bytes for 4096 bytes of parts"},
		{"partial raw payload shorter than its parts", frame{Offset: bs, RawLength: bs, Flags: transfer.FramePartial, Parts: 0b11, PayloadLen: 4096, Sum: goodSum}, good[:4096], "partial frame at offset 65536"},
		{"partial zero frame", frame{Offset: bs, RawLength: bs, Flags: transfer.FramePartial | transfer.FrameZero, Parts: 1, Sum: goodSum}, nil, "cannot be partial"},
		{"partial frame whose block is not the source's", frame{Offset: bs, RawLength: bs, Flags: transfer.FramePartial, Parts: 1, PayloadLen: 4096, Sum: goodSum}, good[:4096], "change tracking disagree"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := &transfertest.Target{Dir: t.TempDir()}
			if err := target.Begin(testJob, testVM, testCP); err != nil {
				t.Fatal(err)
			}
			addr := startReceiver(t, target, server, transfer.ReceiverOptions{PersistBytes: 1})
			h := hello(size, bs)
			s := dialRaw(t, addr, client, h)
			// One good frame at offset 0 first (compressed), acknowledged.
			msg := transfer.AppendFrameHeader(nil, frame{Offset: 0, RawLength: bs, Codec: codec.TagZstd, PayloadLen: uint32(len(compressed)), Sum: goodSum})
			msg = append(msg, compressed...)
			bad := transfer.AppendFrameHeader(nil, c.f)
			bad = append(bad, c.payload...)
			if _, err := s.conn.Write(append(msg, bad...)); err != nil {
				t.Fatal(err)
			}
			got := s.agentError(t)
			if !strings.Contains(got, c.want) {
				t.Fatalf("case %d: agent said %q, want it to mention %q", i, got, c.want)
			}
			s.conn.Close()
			// The good frame is on the replica, nothing of the bad one.
			img, err := os.ReadFile(target.Path(h, "img"))
			if err != nil {
				t.Fatal(err)
			}
			if string(img[:bs]) != string(good) {
				t.Fatal("the good frame before the bad one is not on the replica")
			}
			if !zeros.All(img[bs:]) {
				t.Fatal("bytes of the rejected frame reached the replica")
			}
		})
	}
}

func TestUnknownClientsRejected(t *testing.T) {
	server, client, files := testPKI(t)
	target := &transfertest.Target{Dir: t.TempDir()}
	target.Begin(testJob, testVM, testCP)
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{})
	src := makeSource(t, t.TempDir(), 1<<20, 64<<10, 3)

	other, err := pki.EnsureDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := pki.Files{CA: files.CA, Cert: other.Cert, Key: other.Key}.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	noCert := client.Clone()
	noCert.Certificates = nil
	wrongCA, err := other.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	for name, conf := range map[string]*tls.Config{
		"no certificate":                 noCert,
		"certificate from another CA":    stranger,
		"server signed by an unknown CA": wrongCA,
	} {
		s := &transfer.Sender{Address: addr, TLS: conf}
		_, err := s.SendDisk(context.Background(), src.open(t), nil, nil, options(64<<10), nil)
		if err == nil {
			t.Fatalf("%s: transfer accepted", name)
		}
		if transfer.IsRetryable(err) {
			t.Errorf("%s: error marked retryable: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	if n := target.Opened(); n != 0 {
		t.Fatalf("%d disks opened for unauthenticated clients", n)
	}
}

func TestNamesRejected(t *testing.T) {
	server, client, _ := testPKI(t)
	dir := t.TempDir()
	target := &transfertest.Target{Dir: filepath.Join(dir, "datastore")}
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{})
	src := makeSource(t, t.TempDir(), 1<<20, 64<<10, 3)
	bad := []string{"", ".", "..", "../x", "a/b", `a\b`, "a\x00b", "/abs", "C:x", "x:stream", "nul", "COM1.txt", "trailing.", strings.Repeat("a", 65)}
	for _, name := range bad {
		for _, field := range []string{"job", "vm", "disk", "checkpoint"} {
			o := options(64 << 10)
			switch field {
			case "job":
				o.Job = name
			case "vm":
				o.VMID = name
			case "disk":
				o.DiskID = name
			case "checkpoint":
				o.CheckpointID = name
			}
			// The sender refuses too; speak to the agent directly to see it refuse.
			if _, err := (&transfer.Sender{Address: addr, TLS: client}).SendDisk(context.Background(), src.open(t), nil, nil, o, nil); err == nil {
				t.Fatalf("sender accepted %s name %q", field, name)
			}
			h := hello(src.size, 64<<10)
			h.Job, h.VMID, h.DiskID, h.CheckpointID = o.Job, o.VMID, o.DiskID, o.CheckpointID
			s := dialRaw(t, addr, client, h)
			msg := s.agentError(t)
			if !strings.Contains(msg, field+" name") {
				t.Errorf("%s name %q: agent said %q", field, name, msg)
			}
			s.conn.Close()
		}
	}
	// Nothing was created anywhere: not even the datastore.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("files created: %v", entries)
	}
	if target.Opened() != 0 {
		t.Fatal("a disk was opened")
	}
}

func TestNoSessionRejected(t *testing.T) {
	server, client, _ := testPKI(t)
	target := &transfertest.Target{Dir: t.TempDir()}
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{})
	src := makeSource(t, t.TempDir(), 1<<20, 64<<10, 3)
	_, err := (&transfer.Sender{Address: addr, TLS: client}).SendDisk(context.Background(), src.open(t), nil, nil, options(64<<10), nil)
	var ae *transfer.AgentError
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, "no open restore point") || transfer.IsRetryable(err) {
		t.Fatalf("err = %v, want the agent's final refusal naming the missing restore point", err)
	}
}

func TestBusyAgentIsRetryable(t *testing.T) {
	server, client, _ := testPKI(t)
	target := &transfertest.Target{Dir: t.TempDir()}
	target.Begin(testJob, testVM, testCP)
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{MaxConnections: 1})
	src := makeSource(t, t.TempDir(), 1<<20, 64<<10, 3)
	h := hello(src.size, 64<<10)
	h.DiskID = "other"
	held := dialRaw(t, addr, client, h) // holds the only slot
	held.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if typ, _, err := transfer.ReadMessage(held.br); err != nil || typ != transfer.MsgHelloRep {
		t.Fatalf("first connection: %q, %v", typ, err)
	}
	_, err := (&transfer.Sender{Address: addr, TLS: client}).SendDisk(context.Background(), src.open(t), nil, nil, options(64<<10), nil)
	if err == nil || !transfer.IsRetryable(err) || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("err = %v, want a retryable busy refusal", err)
	}
	held.conn.Close()
	// Once the slot is free the transfer goes through.
	res, err := (&transfer.Sender{Address: addr, TLS: client}).SendDiskWithRetry(context.Background(), src.open(t), nil, nil, options(64<<10), nil,
		transfer.RetryPolicy{Attempts: 50, Backoff: 10 * time.Millisecond})
	if err != nil || res.Acknowledged != src.size {
		t.Fatalf("after the slot freed: %+v, %v", res, err)
	}
}

// The agent's buffer budget counts what the sink of an open disk holds
// besides the receiver's own buffers: a budget that one connection's block
// buffers fit but not together with the sink's is a retryable busy refusal.
func TestBufferBudgetCountsTheSinksBuffers(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 64 << 10 // the receiver's own buffers: 8 blocks and 320 KiB
	src := makeSource(t, t.TempDir(), 1<<20, bs, 5)
	for _, sink := range []int64{1 << 20, 0} {
		target := &transfertest.Target{Dir: t.TempDir()}
		target.Begin(testJob, testVM, testCP)
		addr := startReceiver(t, target, server, transfer.ReceiverOptions{MaxBufferBytes: 1 << 20, SinkBufferBytes: sink})
		res, err := (&transfer.Sender{Address: addr, TLS: client}).SendDisk(context.Background(), src.open(t), nil, nil, options(bs), nil)
		if sink > 0 {
			if err == nil || !transfer.IsRetryable(err) || !strings.Contains(err.Error(), "busy") || !strings.Contains(err.Error(), "limit 1048576") {
				t.Fatalf("sink holding %d bytes: err = %v, want a retryable busy refusal naming the limit", sink, err)
			}
			continue
		}
		if err != nil || res.Acknowledged != src.size {
			t.Fatalf("sink holding nothing: %+v, %v, want the disk sent within the same budget", res, err)
		}
	}
}

// TestHalfOpenConnectionResumes: connections that stop carrying bytes
// without closing (a NAT or firewall that dropped its state) are given up
// by the sender after its stall timeout, long before the agent's idle
// timeout, and the transfer resumes and ends identical.
func TestHalfOpenConnectionResumes(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	src := makeSource(t, t.TempDir(), 6<<20, bs, 71)
	target := &transfertest.Target{Dir: t.TempDir()}
	target.Begin(testJob, testVM, testCP)
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{PersistBytes: 128 << 10, IdleTimeout: 10 * time.Minute})
	r := rand.New(rand.NewPCG(71, 72))
	stalls := 0
	proxy := newCutProxy(t, func() string { return addr }, func() int64 {
		if stalls++; stalls > 3 {
			return -1
		}
		return 64<<10 + r.Int64N(1<<20)
	})
	proxy.stall = true
	s := &transfer.Sender{Address: proxy.addr(), TLS: client, StallTimeout: 500 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := options(bs)
	opts.Compression = codec.Fast
	res, err := s.SendDiskWithRetry(ctx, src.open(t), nil, nil, opts, nil,
		transfer.RetryPolicy{Attempts: 10, Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if proxy.cuts.Load() != 3 {
		t.Fatalf("%d connections stalled, want 3", proxy.cuts.Load())
	}
	if res.ResumedFromByte != 0 {
		t.Fatalf("resumed from %d on the first attempt", res.ResumedFromByte)
	}
	checkReplica(t, target, hello(src.size, bs), expected(t, src.path, nil), blockplan.Full(src.size, bs, src.allocated))
}

// TestStalledAttemptSaysSo: one attempt over a connection that stalls ends
// with a retryable error that says what happened.
func TestStalledAttemptSaysSo(t *testing.T) {
	server, client, _ := testPKI(t)
	const bs = 64 << 10
	src := makeSource(t, t.TempDir(), 4<<20, bs, 73)
	target := &transfertest.Target{Dir: t.TempDir()}
	target.Begin(testJob, testVM, testCP)
	addr := startReceiver(t, target, server, transfer.ReceiverOptions{IdleTimeout: 10 * time.Minute})
	proxy := newCutProxy(t, func() string { return addr }, func() int64 { return 100 << 10 })
	proxy.stall = true
	s := &transfer.Sender{Address: proxy.addr(), TLS: client, StallTimeout: 300 * time.Millisecond}
	_, err := s.SendDisk(context.Background(), src.open(t), nil, nil, options(bs), nil)
	if err == nil || !transfer.IsRetryable(err) || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("want a retryable stall error, got %v", err)
	}
}

// TestEndTransfers: a connection left over from an earlier attempt (here one
// that sent its Hello and then nothing) is ended when the VM's next restore
// point is opened, and the disk is free again at once.
func TestEndTransfers(t *testing.T) {
	server, client, _ := testPKI(t)
	target := &transfertest.Target{Dir: t.TempDir()}
	target.Begin(testJob, testVM, testCP)
	addr, recv := serveReceiver(t, target, server, transfer.ReceiverOptions{IdleTimeout: 10 * time.Minute})
	s := dialRaw(t, addr, client, hello(1<<20, 64<<10))
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if typ, _, err := transfer.ReadMessage(s.br); err != nil || typ != transfer.MsgHelloRep {
		t.Fatalf("hello reply: %q, %v", typ, err)
	}
	testkit.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if target.Opened() == 0 {
			return errors.New("the receiver opened no restore point for the transfer")
		}
		return nil
	})
	recv.EndTransfers("other-job", testVM) // another job's VM: left alone
	s.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := transfer.ReadMessage(s.br); err == nil {
		t.Fatal("the agent said something unasked")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("another job's transfers were ended too: %v", err)
	}
	recv.EndTransfers(testJob, testVM)
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := transfer.ReadMessage(s.br); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the connection was not ended")
			}
			break
		}
	}
}
