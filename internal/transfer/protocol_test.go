package transfer

import (
	"strings"
	"testing"
	"time"
)

func TestHelloRoundTrip(t *testing.T) {
	h := Hello{Version: Version, Job: "demo", VMID: "vm-1", DiskID: "disk0", CheckpointID: "cp", DiskSize: 1 << 40, BlockSize: 1 << 20, WantDigests: true, Token: strings.Repeat("ab", 32)}
	var e encoder
	msg := encodeHello(&e, h)
	got, err := decodeHello(msg[5:])
	if err != nil || got != h {
		t.Fatalf("decode(encode(%+v)) = %+v, %v", h, got, err)
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte("XXXX"), msg[9:]...)
	if _, err := decodeHello(bad); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Fatalf("bad magic: %v", err)
	}
	for _, v := range []uint16{0, Version + 1} {
		h.Version = v
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "protocol version") {
			t.Fatalf("version %d: %v", v, err)
		}
	}
	// A version 2 sender (no session token) is refused, and told why.
	old := h
	old.Version, old.Token = 2, ""
	got, err = decodeHello(encodeHello(&e, old)[5:])
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Validate(); err == nil || !strings.Contains(err.Error(), "predates session tokens") {
		t.Fatalf("version 2 sender: %v", err)
	}
	h.Version = Version
	for _, tok := range []string{"", "short", strings.Repeat("AB", 32), strings.Repeat("zz", 32)} {
		h.Token = tok
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "session token") {
			t.Fatalf("token %q: %v", tok, err)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"demo", "vm-01", "6B29FC40-CA47-1067-B31D-00DD010662DA", "disk0.vhdx", "a b", "Ω"} {
		if err := ValidName("vm", ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", `a\b`, "/etc", "a\x00", "C:", "a:b", "con", "LPT1", "nul.txt", "x.", "x ", "a\nb", strings.Repeat("x", 65)} {
		if err := ValidName("vm", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzDecodeHello(f *testing.F) {
	var e encoder
	f.Add(encodeHello(&e, Hello{Version: Version, Job: "j", VMID: "v", DiskID: "d", CheckpointID: "c", DiskSize: 1 << 30, BlockSize: 1 << 20})[5:])
	f.Add([]byte("RPLC"))
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := decodeHello(body)
		if err != nil {
			return
		}
		var e encoder
		if again, err := decodeHello(encodeHello(&e, h)[5:]); err != nil || again != h {
			t.Fatalf("re-encoding %+v gave %+v, %v", h, again, err)
		}
	})
}

func TestPace(t *testing.T) {
	const mb = 1 << 20
	cases := []struct {
		sent, rate int64
		elapsed    time.Duration
		want       time.Duration
	}{
		{10 * mb, 0, 0, 0},               // no cap
		{mb / 2, mb, 0, 0},               // within the first second's burst
		{3 * mb, mb, 0, 2 * time.Second}, // 2 MiB beyond the burst at 1 MiB/s
		{3 * mb, mb, 500 * time.Millisecond, 1500 * time.Millisecond},
		{3 * mb, mb, 5 * time.Second, 0}, // behind schedule: no wait
		{101 * mb, 100 * mb, 0, 10 * time.Millisecond},
	}
	for _, c := range cases {
		if got := pace(c.sent, c.rate, c.elapsed); got != c.want {
			t.Errorf("pace(%d, %d, %v) = %v, want %v", c.sent, c.rate, c.elapsed, got, c.want)
		}
	}
}
