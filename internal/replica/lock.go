package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// ErrLocked is returned when another writer holds the replica.
var ErrLocked = errors.New("replica is locked by another writer")

// heldLocks are the lock files this process holds, so that a second Lock in
// the same process fails whatever the platform's lock semantics.
var heldLocks = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

// fileLock is an exclusive lock on <replica>/lock held through an open file:
// the kernel releases it when the holder exits or dies, so a crashed writer
// never blocks the next one and nothing is deleted by hand.
type fileLock struct {
	path string
	f    *os.File
}

func acquireLock(path, owner string) (*fileLock, error) {
	heldLocks.Lock()
	defer heldLocks.Unlock()
	if heldLocks.m[path] {
		return nil, fmt.Errorf("lock %s: %w (%s)", path, ErrLocked, lockHolder(path))
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|noFollow, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := lockFile(f, true); err != nil {
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("lock %s: %w (%s)", path, ErrLocked, lockHolder(path))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	host, _ := os.Hostname()
	info := fmt.Sprintf("owner=%s pid=%d host=%s since=%s\n", owner, os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
	// The holder's description is for the error message of the next writer;
	// the lock itself is the kernel's, so this needs no sync.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(info), 0)
	}
	heldLocks.m[path] = true
	return &fileLock{path: path, f: f}, nil
}

func lockHolder(path string) string {
	b, err := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if err != nil || s == "" {
		return "holder unknown"
	}
	return "locked by " + s
}

func (l *fileLock) release() error {
	heldLocks.Lock()
	defer heldLocks.Unlock()
	if l.f == nil {
		return nil
	}
	unlockFile(l.f)
	err := l.f.Close()
	l.f = nil
	delete(heldLocks.m, l.path)
	return err
}

// readersLock is <replica>/readers: readers hold it shared while they read
// files of listed points; a writer holds it exclusively while a retention
// merge rewrites the base and removes the merged child, so that a reader never
// sees a chain change under it. Waiting polls, so that ctx can end the wait.
type readersLock struct{ f *os.File }

const lockPoll = 20 * time.Millisecond

func lockReaders(ctx context.Context, path string, exclusive bool) (*readersLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|noFollow, 0o600)
	if err != nil && !exclusive {
		// A datastore mounted read-only has no writer to exclude.
		if f, err = os.Open(path); err != nil {
			return &readersLock{}, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	for {
		err := lockFile(f, exclusive)
		if err == nil {
			return &readersLock{f: f}, nil
		}
		if !errors.Is(err, errWouldBlock) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for %s: %w", path, ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

func (l *readersLock) release() {
	if l == nil || l.f == nil {
		return
	}
	unlockFile(l.f)
	l.f.Close()
	l.f = nil
}
