package replica

import (
	"context"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/vhdx"
)

// vhdxChainBlockSize is the VHDX block size of replica disks: the size
// Hyper-V gives differencing disks, small enough that a child holding few
// changes stays small.
const vhdxChainBlockSize = 2 << 20

type vhdxChain struct{}

func vhdxOptions(size int64, sectorSize int) vhdx.CreateOptions {
	return vhdx.CreateOptions{Size: size, BlockSize: vhdxChainBlockSize, LogicalSectorSize: uint32(sectorSize), PhysicalSectorSize: 4096}
}

func (vhdxChain) createBase(path string, size int64, sectorSize int) (writableDisk, error) {
	return vhdx.Create(path, vhdxOptions(size, sectorSize))
}

func (vhdxChain) createChild(path, parent string, size int64, sectorSize int) (writableDisk, error) {
	return vhdx.CreateDifferencing(path, parent, vhdxOptions(size, sectorSize))
}

// WriteBufferBytes is the most memory one open replica disk holds for
// writes on their way to storage, besides what its writer passes in.
const WriteBufferBytes = vhdx.WriteBehindBytes

func (vhdxChain) openWritable(chain []string) (writableDisk, error) {
	// A replica's data is written once and read back seldom (digests of
	// blocks the sender did not describe, verification): it goes to
	// storage by direct I/O rather than filling the page cache.
	o := vhdx.OpenOptions{Writable: true, Parents: chain[1:], DirectWrites: true}
	return vhdx.OpenWith(chain[0], o)
}

func (vhdxChain) openReadOnly(chain []string, ignoreLinkage bool) (disk.Image, error) {
	o := vhdx.OpenOptions{Parents: chain[1:], IgnoreParentLinkage: ignoreLinkage}
	return vhdx.OpenWith(chain[0], o)
}

func (vhdxChain) merge(ctx context.Context, child, parent string) error {
	// The oldest point taking in the next one is written as a replica is:
	// not through the page cache.
	return vhdx.MergeWith(ctx, child, parent, vhdx.MergeOptions{DirectWrites: true})
}

func (vhdxChain) relink(child, parent string) error { return vhdx.SetParent(child, parent) }
