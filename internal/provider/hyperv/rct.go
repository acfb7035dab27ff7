package hyperv

import (
	"context"
	"fmt"

	"github.com/replicator/replicator/internal/disk"
)

// diskChanges asks GetVirtualDiskChanges for the changed ranges of the whole
// disk at path since the RCT id limitID. The method may process less than it
// was asked, so it is called again from where it stopped until the end of the
// disk. The result is sorted, merged and clamped to [0, size).
func (p *Provider) diskChanges(ctx context.Context, op, imsPath, path, limitID string, size int64) ([]disk.Extent, error) {
	var ranges []disk.Extent
	for offset := int64(0); offset < size; {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%s at byte %d: %w", op, offset, err)
		}
		in := map[string]any{
			"Path":             path,
			"LimitId":          limitID,
			"TargetSnapshotId": "",
			"ByteOffset":       uint64(offset),
			"ByteLength":       uint64(size - offset),
		}
		res, err := p.call(ctx, fmt.Sprintf("%s at byte %d", op, offset), kindChanges, imsPath, "GetVirtualDiskChanges", in,
			[]string{"ProcessedByteLength", "ChangedByteOffsets", "ChangedByteLengths", "Job"})
		if err != nil {
			return nil, err
		}
		processed, ok := asInt64(res.Out["ProcessedByteLength"])
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
		for i := range offsets {
			ranges = append(ranges, disk.Extent{Offset: offsets[i], Length: lengths[i]})
		}
		offset += processed
	}
	return disk.Merge(ranges, size), nil
}
