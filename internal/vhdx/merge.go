package vhdx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
)

// mergeChunk is how much Merge copies per read and write.
const mergeChunk = 4 * mib

// Merge copies the data a differencing disk holds itself (its present
// sectors and its zero blocks) into parentPath, then flushes the parent. The
// child is not changed. Rerunning Merge after a crash copies the same bytes
// again and leaves the same parent. parentPath must be the child's parent
// (named by its locator or matching its linkage); writing changes the
// parent's DataWriteGuid, so other children of it must be re-linked with
// SetParent (or discarded).
func Merge(ctx context.Context, childPath, parentPath string) error {
	return MergeWith(ctx, childPath, parentPath, MergeOptions{})
}

// MergeOptions tune MergeWith.
type MergeOptions struct {
	// DirectWrites writes the parent as OpenOptions.DirectWrites does: for
	// a parent that is written once and seldom read back soon, such as a
	// replica's oldest restore point taking in the next one.
	DirectWrites bool
}

// MergeWith is Merge with options.
func MergeWith(ctx context.Context, childPath, parentPath string, o MergeOptions) (err error) {
	child, err := OpenWith(childPath, OpenOptions{NoParent: true})
	if err != nil {
		return fmt.Errorf("vhdx: merge: %w", err)
	}
	defer child.Close()
	if !child.hasParent {
		return fmt.Errorf("vhdx: merge %s: %w", childPath, ErrNotDifferencing)
	}
	if err := child.isParent(parentPath); err != nil {
		return fmt.Errorf("vhdx: merge: %w", err)
	}
	parent, err := OpenWith(parentPath, OpenOptions{Writable: true, DirectWrites: o.DirectWrites})
	if err != nil {
		return fmt.Errorf("vhdx: merge: %w", err)
	}
	defer func() {
		if cerr := parent.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("vhdx: merge into %s: %w", parentPath, cerr)
		}
	}()
	if parent.Size() != child.Size() || parent.SectorSize() != child.SectorSize() {
		return fmt.Errorf("vhdx: merge %s into %s: sizes differ (%d/%d bytes, sectors %d/%d)",
			childPath, parentPath, child.Size(), parent.Size(), child.SectorSize(), parent.SectorSize())
	}
	ext, err := child.ownExtents(true)
	if err != nil {
		return fmt.Errorf("vhdx: merge %s: %w", childPath, err)
	}
	buf := make([]byte, mergeChunk)
	for _, e := range ext {
		for off := e.Offset; off < e.End(); off += mergeChunk {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := buf[:min(mergeChunk, e.End()-off)]
			if _, err := child.ReadAt(b, off); err != nil {
				return fmt.Errorf("vhdx: merge: read %s at %d: %w", childPath, off, err)
			}
			if _, err := parent.WriteAt(b, off); err != nil {
				return fmt.Errorf("vhdx: merge: write %s at %d: %w", parentPath, off, err)
			}
		}
	}
	if err := parent.Sync(); err != nil {
		return fmt.Errorf("vhdx: merge: %w", err)
	}
	return nil
}

// isParent checks that path is the file the child's locator names, or the
// disk its linkage points at.
func (d *Disk) isParent(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	for _, c := range d.parentCandidates() {
		if cs, err := os.Stat(c); err == nil && os.SameFile(cs, st) {
			return nil
		}
	}
	p, err := openFile(path, false)
	if err != nil {
		return err
	}
	defer p.f.Close()
	if d.checkParent(p, false) == nil {
		return nil
	}
	return fmt.Errorf("%s is not the parent of %s (locator %v)", path, d.path, d.locator.Values)
}

// SetParent points a differencing disk at a new parent: its locator gets the
// new relative and absolute paths and the parent's current DataWriteGuid. Use
// it after merging the child's old parent into the new one. The metadata is
// rewritten through the VHDX log, so a crash leaves either the old or the new
// locator. The child's own data and its DataWriteGuid do not change.
func SetParent(childPath, newParentPath string) (err error) {
	child, err := openFile(childPath, true)
	if err != nil {
		return fmt.Errorf("vhdx: set parent: %w", err)
	}
	defer func() {
		if cerr := child.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("vhdx: set parent of %s: %w", childPath, cerr)
		}
	}()
	return child.setParent(newParentPath)
}

func (d *Disk) setParent(newParentPath string) error {
	child, childPath := d, d.path
	if !child.hasParent {
		return fmt.Errorf("vhdx: set parent of %s: %w", childPath, ErrNotDifferencing)
	}
	parent, err := OpenWith(newParentPath, OpenOptions{NoParent: true})
	if err != nil {
		return fmt.Errorf("vhdx: set parent of %s: %w", childPath, err)
	}
	linkage := parent.DataWriteGUID()
	size, sector := parent.Size(), parent.SectorSize()
	parent.Close()
	if size != child.Size() || sector != child.SectorSize() {
		return fmt.Errorf("vhdx: set parent of %s to %s: sizes differ (%d/%d bytes, sectors %d/%d)",
			childPath, newParentPath, child.Size(), size, child.SectorSize(), sector)
	}
	loc, err := newLocator(childPath, newParentPath, linkage)
	if err != nil {
		return err
	}
	items := make([]metadataItem, len(child.metaItems))
	copy(items, child.metaItems)
	for i := range items {
		if items[i].entry.ID == metaParentLocator {
			items[i].data = marshalParentLocator(loc)
		}
	}
	region, err := buildMetadataRegion(items, child.metaRegion.Length)
	if err != nil {
		return fmt.Errorf("vhdx: set parent of %s: %w", childPath, err)
	}
	region = append(region, make([]byte, roundUp(int64(len(region)), logSector)-int64(len(region)))...)
	old := make([]byte, len(region))
	if _, err := child.f.ReadAt(old, child.metaRegion.Offset); err != nil {
		return fmt.Errorf("vhdx: set parent of %s: read metadata at %d: %w", childPath, child.metaRegion.Offset, err)
	}
	var pages []logOp
	for pg := 0; pg < len(region); pg += logSector {
		if !bytes.Equal(region[pg:pg+logSector], old[pg:pg+logSector]) {
			pages = append(pages, logOp{off: child.metaRegion.Offset + int64(pg), data: region[pg : pg+logSector]})
		}
	}
	if len(pages) == 0 {
		return nil
	}
	child.mu.Lock()
	err = child.writeThroughLog(pages)
	child.mu.Unlock()
	if err != nil {
		return fmt.Errorf("vhdx: set parent of %s: %w", childPath, err)
	}
	child.locator, child.metaItems = loc, items
	return nil
}

// ErrNotDifferencing reports a merge or re-link of a disk without parent.
var ErrNotDifferencing = errors.New("not a differencing disk")
