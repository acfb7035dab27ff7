package diskimage

import (
	"context"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/exclude"
)

func init() { Analyze = analyzeExclusions }

// analyzeExclusions fills Info's partitions and the ranges replication with
// swap exclusion on (and no excluded paths) would not carry.
func analyzeExclusions(ctx context.Context, img disk.Image) ([]Partition, []ExcludedRange, error) {
	return exclude.Analyze(ctx, img, img.Size(), img.SectorSize(), exclude.Options{Swap: true})
}
