package lab

import (
	"context"
	"fmt"
	"time"
)

// ReferencePoint is a baseline of change tracking that a VM keeps.
type ReferencePoint struct {
	ID string `json:"id"`
	// Name is the name of the checkpoint it was made from.
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
}

// ReferencePoints lists the VM's reference points, oldest first.
func (h *Host) ReferencePoints(ctx context.Context, vmID string) ([]ReferencePoint, error) {
	_, rec, err := h.readVM(vmID)
	if err != nil {
		return nil, err
	}
	out := make([]ReferencePoint, 0, len(rec.ReferencePoints))
	for _, r := range rec.ReferencePoints {
		out = append(out, ReferencePoint{ID: r.ID, Name: r.Name, Created: r.Created})
	}
	return out, nil
}

// DestroyReferencePoint forgets a reference point; changed ranges against it
// are no longer available. An unknown one is not an error.
func (h *Host) DestroyReferencePoint(ctx context.Context, vmID, id string) error {
	dir, rec, l, err := h.lockedVM(vmID)
	if err != nil {
		return err
	}
	defer l.unlock()
	i, ok := rec.referencePoint(id)
	if !ok {
		return nil
	}
	rec.ReferencePoints = append(rec.ReferencePoints[:i:i], rec.ReferencePoints[i+1:]...)
	if err := writeRecord(dir, rec); err != nil {
		return fmt.Errorf("destroy reference point %s of VM %s: %w", id, rec.Name, err)
	}
	removeOldChangeMaps(dir, rec)
	return nil
}

// RenameCheckpoint sets a checkpoint's name.
func (h *Host) RenameCheckpoint(ctx context.Context, vmID, checkpointID, name string) error {
	dir, rec, l, err := h.lockedVM(vmID)
	if err != nil {
		return err
	}
	defer l.unlock()
	i, ok := rec.checkpoint(checkpointID)
	if !ok {
		return checkpointNotFound(rec, checkpointID)
	}
	rec.Checkpoints[i].Name = name
	if err := writeRecord(dir, rec); err != nil {
		return fmt.Errorf("rename checkpoint %s of VM %s: %w", checkpointID, rec.Name, err)
	}
	return nil
}
