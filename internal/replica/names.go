package replica

import (
	"errors"
	"fmt"
	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/names"
	"os"
	"path/filepath"
	"strings"
)

// ErrBadName is returned for a job, VM or disk name that cannot be used as one
// folder name inside the datastore.
var ErrBadName = errors.New("not a safe name for a folder of the datastore")

// CheckName reports whether name is usable as a single path element on Linux
// and Windows alike, by the rule of package names; a refusal satisfies
// errors.Is(err, ErrBadName).
func CheckName(kind, name string) error {
	if err := names.Check(kind, name); err != nil {
		return fmt.Errorf("%w: %w", err, ErrBadName)
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
