package hyperv

import (
	"context"
	"fmt"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/provider"
)

// changesQueryAlign aligns the length of each question: 4 KiB, a multiple of
// both logical sector sizes VHDX allows.
const changesQueryAlign = 4096

// maxChangesAnswers bounds the answers of one disk (each processes at least
// one byte; a host that keeps answering "job started" with no output would
// otherwise be asked forever).
const maxChangesAnswers = 1 << 20

// changesQueryLength is the ByteLength of a question at offset: what is left
// of the disk, but less than the disk's size, as GetVirtualDiskChanges
// requires ("This must be less than the size of the Virtual Disk",
// learn.microsoft.com, hyperv_v2/msvm-imagemanagementservice-getvirtualdiskchanges).
func changesQueryLength(offset, size int64) int64 {
	n := size - offset
	if limit := (size - 1) / changesQueryAlign * changesQueryAlign; limit > 0 && n > limit {
		n = limit
	} else if n >= size {
		n = size - 1
	}
	return n
}

// diskChanges asks GetVirtualDiskChanges for the changed ranges of the whole
// disk at path since the RCT id limitID. The method may process less than it
// was asked, so it is called again from where it stopped until the end of the
// disk. An answer of 4096 (job started) carries its output only once the job
// has ended: after the wait, an answer without progress is asked again. The
// result is sorted, merged and clamped to [0, size).
func (p *Provider) diskChanges(ctx context.Context, op, imsPath, path, limitID string, size int64) ([]disk.Extent, error) {
	if size < 2 {
		return nil, &Error{Op: op, Description: fmt.Sprintf("disk of %d bytes is too small to ask for changes", size), err: provider.ErrNoChangeTracking}
	}
	var ranges []disk.Extent
	answers := 0
	for offset := int64(0); offset < size; {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%s at byte %d: %w", op, offset, err)
		}
		if answers++; answers > maxChangesAnswers {
			return nil, &Error{Op: op, Description: fmt.Sprintf("no end after %d answers (at byte %d)", maxChangesAnswers, offset), retryable: true}
		}
		in := map[string]any{
			"Path":             path,
			"LimitId":          limitID,
			"TargetSnapshotId": "",
			"ByteOffset":       uint64(offset),
			"ByteLength":       uint64(changesQueryLength(offset, size)),
		}
		res, err := p.call(ctx, fmt.Sprintf("%s at byte %d", op, offset), kindChanges, imsPath, "GetVirtualDiskChanges", in,
			[]string{"ProcessedByteLength", "ChangedByteOffsets", "ChangedByteLengths", "Job"})
		if err != nil {
			return nil, err
		}
		processed, ok := asInt64(res.Out["ProcessedByteLength"])
		if res.ReturnValue == rcJobStarted && (!ok || processed <= 0) {
			continue // the job ended; its output comes with the next answer
		}
		if !ok || processed <= 0 {
			return nil, &Error{Op: fmt.Sprintf("%s at byte %d", op, offset), Description: fmt.Sprintf("ProcessedByteLength %v makes no progress", res.Out["ProcessedByteLength"]), retryable: true}
		}
		offsets, err := asInt64s(res.Out["ChangedByteOffsets"])
		if err != nil {
			return nil, &Error{Op: fmt.Sprintf("%s at byte %d", op, offset), Description: "ChangedByteOffsets: " + err.Error()}
		}
		lengths, err := asInt64s(res.Out["ChangedByteLengths"])
		if err != nil {
			return nil, &Error{Op: fmt.Sprintf("%s at byte %d", op, offset), Description: "ChangedByteLengths: " + err.Error()}
		}
		if len(offsets) != len(lengths) {
			return nil, &Error{Op: fmt.Sprintf("%s at byte %d", op, offset), Description: fmt.Sprintf("%d changed offsets but %d lengths", len(offsets), len(lengths))}
		}
		end := offset + processed
		if processed > size-offset {
			end = size
		}
		for i := range offsets {
			if offsets[i] < 0 || lengths[i] < 0 || offsets[i] >= size {
				return nil, &Error{Op: fmt.Sprintf("%s at byte %d", op, offset), Description: fmt.Sprintf("changed range [%d, +%d) lies outside the disk of %d bytes", offsets[i], lengths[i], size)}
			}
			ranges = append(ranges, disk.Extent{Offset: offsets[i], Length: lengths[i]})
		}
		offset = end
	}
	return disk.Merge(ranges, size), nil
}
