package filelock

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A second holder waits until the first closes its file.
func TestLockWaitsForTheHolder(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	open := func() *os.File {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	first := open()
	if err := Lock(first); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	second := open()
	defer second.Close()
	go func() { got <- Lock(second) }()
	select {
	case err := <-got:
		t.Fatalf("the second lock was granted while the first was held (%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	first.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second lock was not granted after the first file was closed")
	}
}
