package replica

import (
	"errors"
	"fmt"
	"github.com/replicator/replicator/internal/atomicfile"
	"os"
	"path/filepath"
	"strings"
)

// ErrBadName is returned for a job, VM or disk name that cannot be used as one
// folder name inside the datastore.
var ErrBadName = errors.New("not a safe name for a folder of the datastore")

// windowsReserved are device names Windows resolves whatever the folder.
var windowsReserved = map[string]bool{
	"CON": true, "PRN": true, "AUX": true, "NUL": true,
	"COM1": true, "COM2": true, "COM3": true, "COM4": true, "COM5": true, "COM6": true, "COM7": true, "COM8": true, "COM9": true,
	"LPT1": true, "LPT2": true, "LPT3": true, "LPT4": true, "LPT5": true, "LPT6": true, "LPT7": true, "LPT8": true, "LPT9": true,
}

// CheckName reports whether name is usable as a single path element on Linux
// and Windows alike: no separators, no parent or current directory, no NUL or
// control characters, no characters or device names Windows refuses, and no
// trailing dot or space (which Windows strips, making two names one folder).
func CheckName(kind, name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%s name %q: %s: %w", kind, name, why, ErrBadName)
	}
	switch {
	case name == "":
		return bad("empty")
	case name == "." || name == "..":
		return bad("refers to a directory")
	case len(name) > 200:
		return bad("longer than 200 bytes")
	case filepath.IsAbs(name):
		return bad("absolute path")
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f {
			return bad("control character")
		}
		if strings.ContainsRune(`/\:*?"<>|`, c) {
			return bad(fmt.Sprintf("contains %q", c))
		}
	}
	if strings.HasSuffix(name, ".") || strings.HasSuffix(name, " ") {
		return bad("ends with a dot or space")
	}
	base := strings.ToUpper(name)
	if i := strings.IndexByte(base, '.'); i >= 0 {
		base = base[:i]
	}
	if windowsReserved[base] {
		return bad("reserved device name on Windows")
	}
	return nil
}

// within reports whether path (already resolved) lies inside root (resolved).
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return false
	}
	return rel == "." || (rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel))
}

// resolveWithin joins elems under root (a resolved path), following symbolic
// links only where they stay inside root. With create, missing folders are
// made one at a time, each after its parent was checked, so nothing is ever
// created outside root. Without create, a missing folder gives an error
// satisfying errors.Is(err, os.ErrNotExist).
func resolveWithin(root string, create bool, elems ...string) (string, error) {
	cur := root
	for _, e := range elems {
		p := filepath.Join(cur, e)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if !create {
				return "", fmt.Errorf("%s: %w", p, os.ErrNotExist)
			}
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return "", fmt.Errorf("create folder %s: %w", p, err)
			}
			if err := atomicfile.SyncDir(cur); err != nil {
				return "", err
			}
			fi, err = os.Lstat(p)
			if err != nil {
				return "", fmt.Errorf("create folder %s: %w", p, err)
			}
		case err != nil:
			return "", fmt.Errorf("inspect %s: %w", p, err)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			r, err := filepath.EvalSymlinks(p)
			if err != nil {
				return "", fmt.Errorf("resolve %s: %w", p, err)
			}
			if !within(root, r) {
				return "", fmt.Errorf("%s links to %s, outside the datastore %s: %w", p, r, root, ErrBadName)
			}
			p = r
			if fi, err = os.Stat(p); err != nil {
				return "", fmt.Errorf("inspect %s: %w", p, err)
			}
		}
		if !fi.IsDir() {
			return "", fmt.Errorf("%s is not a folder", p)
		}
		cur = p
	}
	return cur, nil
}
