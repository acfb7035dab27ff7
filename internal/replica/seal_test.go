package replica

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFileAndDatastoreMarker(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "key")
	if err := os.WriteFile(keyPath, []byte(strings.Repeat("0f", 32)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(keyPath); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a key file others may read: %v", err)
	}
	os.Chmod(keyPath, 0o600)
	key, err := LoadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	// A plain datastore with replicas refuses a key; an empty one takes it
	// and from then on refuses to open without it.
	plain := filepath.Join(dir, "plain")
	if err := os.MkdirAll(filepath.Join(plain, "job1", "vm-1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenEncrypted(plain, true, key); err == nil || !strings.Contains(err.Error(), "not encrypted") {
		t.Fatalf("a plain datastore with replicas took a key: %v", err)
	}
	enc := filepath.Join(dir, "enc")
	if _, err := OpenEncrypted(enc, true, key); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(enc, encryptionFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("marker: %v %v", fi, err)
	}
	if _, err := Open(enc); err == nil || !strings.Contains(err.Error(), "set agent.encryptionKeyFile") {
		t.Fatalf("an encrypted datastore opened without its key: %v", err)
	}
	if _, err := OpenEncrypted(enc, false, key); err != nil {
		t.Fatalf("reopened with its key: %v", err)
	}
}
