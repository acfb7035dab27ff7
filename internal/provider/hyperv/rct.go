package hyperv

import (
	"context"
	"fmt"
	"sort"

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
	return mergeExtents(ranges, size), nil
}

// mergeExtents sorts extents, clamps them to [0, size), drops empty ones and
// merges overlapping or adjacent ones.
func mergeExtents(in []disk.Extent, size int64) []disk.Extent {
	clamped := make([]disk.Extent, 0, len(in))
	for _, e := range in {
		start, end := e.Offset, e.Offset+e.Length
		if e.Length <= 0 || end < start { // empty, or overflowed
			if e.Length > 0 {
				end = size
			} else {
				continue
			}
		}
		if start < 0 {
			start = 0
		}
		if end > size {
			end = size
		}
		if start >= end {
			continue
		}
		clamped = append(clamped, disk.Extent{Offset: start, Length: end - start})
	}
	sort.Slice(clamped, func(i, j int) bool { return clamped[i].Offset < clamped[j].Offset })
	var out []disk.Extent
	for _, e := range clamped {
		if n := len(out); n > 0 && e.Offset <= out[n-1].End() {
			if e.End() > out[n-1].End() {
				out[n-1].Length = e.End() - out[n-1].Offset
			}
			continue
		}
		out = append(out, e)
	}
	return out
}
