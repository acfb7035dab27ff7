package temporalclient

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/encoding/protojson"
)

func testCodec(t *testing.T, key byte) *Codec {
	t.Helper()
	c, err := NewCodec(bytes.Repeat([]byte{key}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCodecRoundTripAndTamper(t *testing.T) {
	c := testCodec(t, 1)
	dc := c.DataConverter()
	p, err := dc.ToPayload(map[string]string{"vm": "web01", "error": "disk of web01 failed"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(p.Data, []byte("web01")) || string(p.Metadata["encoding"]) != EncodingEncrypted {
		t.Fatalf("payload not encrypted: %q %q", p.Metadata, p.Data)
	}
	var got map[string]string
	if err := dc.FromPayload(p, &got); err != nil || got["vm"] != "web01" {
		t.Fatalf("round trip: %v %v", got, err)
	}
	// Another key cannot read it; a flipped bit does not authenticate.
	if _, err := testCodec(t, 2).Decode([]*commonpb.Payload{p}); err == nil {
		t.Fatal("decoded with another key")
	}
	bad := &commonpb.Payload{Metadata: p.Metadata, Data: append([]byte(nil), p.Data...)}
	bad.Data[len(bad.Data)-1] ^= 1
	if _, err := c.Decode([]*commonpb.Payload{bad}); err == nil || !strings.Contains(err.Error(), "does not authenticate") {
		t.Fatalf("tampered payload: %v", err)
	}
	// Payloads stored before the codec was turned on stay readable.
	plain, _ := converter.GetDefaultDataConverter().ToPayload("old")
	out, err := c.Decode([]*commonpb.Payload{plain})
	if err != nil || out[0] != plain {
		t.Fatalf("plain payload: %v", err)
	}
}

func TestCodecServerNeedsOriginAndToken(t *testing.T) {
	c := testCodec(t, 3)
	enc, err := c.Encode([]*commonpb.Payload{{Metadata: map[string][]byte{"encoding": []byte("json/plain")}, Data: []byte(`"web01"`)}})
	if err != nil {
		t.Fatal(err)
	}
	body, err := protojson.Marshal(&commonpb.Payloads{Payloads: enc})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler("http://ui.example", "s3cret"))
	defer srv.Close()
	post := func(origin, auth string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/decode", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, out := post("http://ui.example", "Bearer s3cret"); code != 200 || !strings.Contains(out, "IndlYjAxIg==") { // base64 of "web01" with its quotes
		t.Fatalf("decode with origin and token: %d %s", code, out)
	}
	if code, _ := post("http://evil.example", "Bearer s3cret"); code != http.StatusForbidden {
		t.Fatalf("another origin: %d", code)
	}
	if code, _ := post("http://ui.example", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", code)
	}
}

func TestKeyFileMustBePrivate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "codec.key")
	if err := os.WriteFile(path, []byte(strings.Repeat("ab", 32)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCodec(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a key file readable by others: %v", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCodec(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCodec(path); err == nil || !strings.Contains(err.Error(), "64 hexadecimal digits") {
		t.Fatalf("a short key: %v", err)
	}
}
