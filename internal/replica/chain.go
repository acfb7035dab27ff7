package replica

import (
	"context"
	"io"

	"github.com/replicator/replicator/internal/disk"
)

// writableDisk is an open restore-point disk: the leaf of a chain, writable,
// reading through to its parents.
type writableDisk interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
	Size() int64
}

// chainFormat is the disk format of the chain. The replica keeps the chain
// order itself (in replica.json) and always opens a chain with its parents
// named explicitly, so that a relocated or renamed datastore still reads.
type chainFormat interface {
	// createBase creates a full (dynamic) disk.
	createBase(path string, size int64, sectorSize int) (writableDisk, error)
	// createChild creates a differencing disk over parent.
	createChild(path, parent string, size int64, sectorSize int) (writableDisk, error)
	// openWritable opens chain[0] for writing, chain[1:] being its parents.
	openWritable(chain []string) (writableDisk, error)
	// openReadOnly opens chain[0] with chain[1:] as its parents. With
	// ignoreLinkage the parents' write identifiers are not checked (during a
	// retention merge the base changes under a child that still lists it).
	openReadOnly(chain []string, ignoreLinkage bool) (disk.Image, error)
	// merge copies the data child holds itself into parent; idempotent.
	merge(ctx context.Context, child, parent string) error
	// relink makes parent the parent of child; idempotent.
	relink(child, parent string) error
}
