package transfer_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/replicator/replicator/internal/blockplan"
	"github.com/replicator/replicator/internal/digest"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/pki"
	"github.com/replicator/replicator/internal/transfer"
	"github.com/replicator/replicator/internal/transfer/transfertest"
)

const (
	testJob  = "demo"
	testVM   = "vm-1"
	testDisk = "disk0"
	testCP   = "cp-1"
)

// testPKI returns the agent's and the proxy's TLS configurations.
func testPKI(t testing.TB) (server, client *tls.Config, files pki.Files) {
	t.Helper()
	files, err := pki.EnsureDev(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	server, err = files.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	client, err = files.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	return server, client, files
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startReceiver serves target on a loopback port until the test ends.
func startReceiver(t testing.TB, target transfer.Target, server *tls.Config, o transfer.ReceiverOptions) string {
	t.Helper()
	addr, _ := serveReceiver(t, target, server, o)
	return addr
}

// serveReceiver is startReceiver that also returns the receiver.
func serveReceiver(t testing.TB, target transfer.Target, server *tls.Config, o transfer.ReceiverOptions) (string, *transfer.Receiver) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	r := transfer.NewReceiver(target, server, o)
	transfertest.Serve(t, r, ln)
	return ln.Addr().String(), r
}

// source is a test disk: a sparse file with random, compressible and zero
// blocks and holes, and its allocated extents.
type source struct {
	path      string
	size      int64
	allocated []disk.Extent
}

// makeSource writes a disk of size bytes whose blocks of bs bytes are chosen
// at random: a hole, random bytes, text, or allocated zeros.
func makeSource(t testing.TB, dir string, size, bs int64, seed uint64) source {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	path := filepath.Join(dir, "source.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	var ext []disk.Extent
	buf := make([]byte, bs)
	text := bytes.Repeat([]byte("guest filesystem data, fairly compressible; "), int(bs)/44+1)
	for off := int64(0); off < size; off += bs {
		n := min(bs, size-off)
		switch k := r.IntN(10); {
		case k < 2: // hole
			continue
		case k < 6:
			for i := range buf[:n] {
				buf[i] = byte(r.Uint32())
			}
		case k < 9:
			copy(buf, text[r.IntN(40):])
			buf[r.IntN(int(n))] = byte(r.Uint32())
		default:
			clear(buf)
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			t.Fatal(err)
		}
		if l := len(ext); l > 0 && ext[l-1].End() == off {
			ext[l-1].Length += n
		} else {
			ext = append(ext, disk.Extent{Offset: off, Length: n})
		}
	}
	return source{path: path, size: size, allocated: ext}
}

func (s source) open(t testing.TB) *transfertest.Image {
	t.Helper()
	img, err := transfertest.OpenImage(s.path, s.allocated)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { img.Close() })
	return img
}

func hello(size, bs int64) transfer.Hello {
	return transfer.Hello{Version: transfer.Version, Job: testJob, VMID: testVM, DiskID: testDisk, CheckpointID: testCP, DiskSize: size, BlockSize: bs, Token: transfertest.DefaultToken}
}

func options(bs int64) transfer.SendOptions {
	return transfer.SendOptions{Job: testJob, VMID: testVM, DiskID: testDisk, CheckpointID: testCP, BlockSize: bs, Token: transfertest.DefaultToken}
}

// expected returns the source's bytes with the excluded ranges zeroed.
func expected(t testing.TB, path string, excluded []disk.Extent) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range excluded {
		clear(b[max(e.Offset, 0):min(e.End(), int64(len(b)))])
	}
	return b
}

// checkReplica asserts the replica's bytes equal want and that the digest
// recorded for every block of plan is that of the block's bytes.
func checkReplica(t testing.TB, target *transfertest.Target, h transfer.Hello, want []byte, plan blockplan.Plan) {
	t.Helper()
	got, err := os.ReadFile(target.Path(h, "img"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("replica is %d bytes, want %d", len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("replica differs from the source first at byte %d (block %d)", i, int64(i)/h.BlockSize)
			}
		}
	}
	sums, err := target.ReadSums(h)
	if err != nil {
		t.Fatal(err)
	}
	for b := range plan {
		data := want[b.Offset:b.End()]
		if (b.Index >= int64(len(sums)) || sums[b.Index] == digest.Sum{}) && bytes.Count(data, []byte{0}) == len(data) {
			continue // never written, and zeros: the replica reads zeros there
		}
		if b.Index >= int64(len(sums)) || sums[b.Index] != digest.Of(data) {
			t.Fatalf("digest of block %d not recorded or wrong", b.Index)
		}
	}
}

// cutProxy forwards TCP connections to upstream() and cuts each one after a
// random number of bytes (both directions together).
type cutProxy struct {
	ln       net.Listener
	upstream func() string
	budget   func() int64 // bytes before the cut; < 0 never
	// stall makes a cut half-open: bytes stop flowing both ways but both
	// connections stay open until an end closes its own.
	stall bool
	cuts  atomic.Int64
	wg    sync.WaitGroup
}

func newCutProxy(t testing.TB, upstream func() string, budget func() int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, upstream: upstream, budget: budget}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.upstream())
		if err != nil {
			c.Close()
			continue
		}
		budget := p.budget()
		var used atomic.Int64
		var counted atomic.Bool // one cut per connection, whichever way
		var once sync.Once
		cut := func() { once.Do(func() { c.Close(); u.Close() }) }
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			defer cut()
			buf := make([]byte, 16<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					if budget >= 0 && used.Add(int64(n)) > budget {
						if counted.CompareAndSwap(false, true) {
							p.cuts.Add(1)
						}
						for p.stall {
							if _, err := src.Read(buf); err != nil {
								return
							}
						}
						return
					}
					if _, err := dst.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}
		p.wg.Add(2)
		go pipe(u, c)
		go pipe(c, u)
	}
}

func (s source) bytes(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
