package replica

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/replicator/replicator/internal/atomicfile"
)

// referenceFile maps restore points to the source's change-tracking reference
// point taken at the same moment. It lives beside replica.json and is written
// atomically; a point without an entry simply has no known reference point
// (the next run then compares digests), so losing it costs speed, never data.
const referenceFile = "reference.json"

type referenceRecord struct {
	Version int               `json:"version"`
	Points  map[string]string `json:"points"`
}

// SetReferencePoint records that ref, a reference point of the source host,
// describes the same moment as restore point pointID. Entries of points no
// longer listed are dropped.
func (w *Writer) SetReferencePoint(pointID, ref string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if w.meta == nil {
		return fmt.Errorf("reference point of %s: the replica is not prepared", w.l)
	}
	rec := referenceRecord{Version: 1, Points: map[string]string{}}
	listed := false
	for _, p := range w.meta.Points {
		if p.ID == pointID {
			listed = true
		}
	}
	if !listed {
		return fmt.Errorf("reference point of %s: restore point %s is not listed: %w", w.l, pointID, ErrNoPoint)
	}
	old, err := readReferences(filepath.Join(string(w.l), referenceFile))
	if err != nil {
		return err
	}
	for _, p := range w.meta.Points {
		if r, ok := old.Points[p.ID]; ok {
			rec.Points[p.ID] = r
		}
	}
	rec.Points[pointID] = ref
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(string(w.l), referenceFile), b, 0o600)
}

// ReferencePoint returns the source reference point recorded for a restore
// point ("" = newest); "" when none is known.
func (r *Replica) ReferencePoint(pointID string) (string, error) {
	l, _, p, err := r.findPoint(pointID)
	if err != nil {
		return "", err
	}
	rec, err := readReferences(filepath.Join(string(l), referenceFile))
	if err != nil {
		return "", err
	}
	return rec.Points[p.ID], nil
}

func readReferences(path string) (referenceRecord, error) {
	rec := referenceRecord{Points: map[string]string{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return rec, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("%s is damaged (%v); delete it to fall back to digest comparison", path, err)
	}
	if rec.Points == nil {
		rec.Points = map[string]string{}
	}
	return rec, nil
}
