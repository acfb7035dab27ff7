package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
)

// ApplyRetention merges the oldest child into the base until keep restore
// points remain. Each merge is recorded (and the oldest point unlisted) in one
// atomic metadata write before any file is touched; a crash at any moment
// leaves every listed point readable, and the next writer finishes the merge.
func (w *Writer) ApplyRetention(ctx context.Context, keep int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if keep < 1 {
		return fmt.Errorf("apply retention to %s: keep %d restore points: at least 1", w.l, keep)
	}
	if w.meta == nil {
		return nil
	}
	if w.ses != nil && len(w.ses.open) > 0 {
		return fmt.Errorf("apply retention to %s: restore point %s has disks open", w.l, w.ses.pointID)
	}
	if w.meta.Merge != nil {
		if err := w.finishMerge(ctx); err != nil {
			return err
		}
	}
	for len(w.meta.Points) > keep {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := w.mergeOldest(ctx); err != nil {
			return err
		}
	}
	return nil
}

// mergeOldest folds the second point's own data into the base, which then
// holds the second point; the oldest point is unlisted. Called with w.mu held.
func (w *Writer) mergeOldest(ctx context.Context) error {
	oldest, next := &w.meta.Points[0], &w.meta.Points[1]
	intent := &mergeIntent{Point: next.ID}
	for _, d := range next.Disks {
		switch len(d.Chain) {
		case 1:
			continue // the disk first appeared in next: it is its own base
		case 2:
		default:
			return fmt.Errorf("apply retention to %s: point %s disk %s has a chain of %d files after the oldest point", w.l, next.ID, d.ID, len(d.Chain))
		}
		md := mergeDiskIntent{ID: d.ID, Child: d.Chain[0], Base: d.Chain[1]}
		// Every file whose parent is the child is relinked to the base:
		// the next point's, and an open session's when next is the newest.
		for _, c := range w.chainsOf(d.ID) {
			if k := slices.Index(c, md.Child); k > 0 && !slices.Contains(md.Relink, c[k-1]) {
				md.Relink = append(md.Relink, c[k-1])
			}
		}
		intent.Disks = append(intent.Disks, md)
	}
	oldestID := oldest.ID
	readers, err := lockReaders(ctx, w.l.readers(), true)
	if err != nil {
		return fmt.Errorf("apply retention to %s: %w", w.l, err)
	}
	defer readers.release()
	err = w.update(func(m *metadata) error {
		m.Points = m.Points[1:]
		m.Merge = intent
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply retention to %s: record merge of %s into %s: %w", w.l, next.ID, oldestID, err)
	}
	return w.carryOutMerge(ctx)
}

// chainsOf returns every chain of one disk: listed points and open session.
func (w *Writer) chainsOf(diskID string) [][]string {
	var chains [][]string
	for _, p := range w.meta.Points {
		if d := p.disk(diskID); d != nil {
			chains = append(chains, d.Chain)
		}
	}
	if s := w.meta.Session; s != nil {
		if d := s.disk(diskID); d != nil {
			chains = append(chains, d.Chain)
		}
	}
	return chains
}

// finishMerge carries out a merge recorded earlier (by a writer that crashed
// or failed), with readers kept out. Called with w.mu held.
func (w *Writer) finishMerge(ctx context.Context) error {
	readers, err := lockReaders(ctx, w.l.readers(), true)
	if err != nil {
		return fmt.Errorf("finish merge in %s: %w", w.l, err)
	}
	defer readers.release()
	return w.carryOutMerge(ctx)
}

// carryOutMerge carries out the recorded merge; every step may run again
// after a crash. Merging rewrites the base, so the relinks follow it every
// time. Called with w.mu and the readers lock held.
func (w *Writer) carryOutMerge(ctx context.Context) error {
	g := w.meta.Merge
	for _, d := range g.Disks {
		child, base := w.l.vhdx(d.ID, d.Child), w.l.vhdx(d.ID, d.Base)
		if _, err := os.Stat(child); err != nil {
			return fmt.Errorf("merge restore point %s disk %s: child %s: %w", g.Point, d.ID, child, err)
		}
		if err := w.format.merge(ctx, child, base); err != nil {
			return fmt.Errorf("merge restore point %s disk %s: %s into %s: %w", g.Point, d.ID, child, base, err)
		}
		if err := syncFile(base); err != nil {
			return err
		}
		for _, f := range d.Relink {
			p := w.l.vhdx(d.ID, f)
			if err := w.format.relink(p, base); err != nil {
				return fmt.Errorf("merge restore point %s disk %s: link %s to %s: %w", g.Point, d.ID, p, base, err)
			}
			if err := syncFile(p); err != nil {
				return err
			}
		}
	}
	err := w.update(func(m *metadata) error {
		for _, d := range m.Merge.Disks {
			drop := func(c []string) []string {
				return slices.DeleteFunc(c, func(f string) bool { return f == d.Child })
			}
			for i := range m.Points {
				if pd := m.Points[i].disk(d.ID); pd != nil {
					pd.Chain = drop(pd.Chain)
				}
			}
			if m.Session != nil {
				if sd := m.Session.disk(d.ID); sd != nil {
					sd.Chain = drop(sd.Chain)
				}
			}
		}
		m.Merge = nil
		return nil
	})
	if err != nil {
		return fmt.Errorf("merge restore point %s: record the merged chain: %w", g.Point, err)
	}
	var errs []error
	for _, d := range g.Disks {
		if err := os.Remove(w.l.vhdx(d.ID, d.Child)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove merged %s: %w", w.l.vhdx(d.ID, d.Child), err))
		}
	}
	errs = append(errs, w.collectGarbage())
	return errors.Join(errs...)
}
