package replica

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/secretfile"
)

// Encryption at rest. The chain's disk files hold AES-256-GCM ciphertext at
// the offsets of the plaintext, in units of sealUnit bytes (the last unit of
// a disk may be shorter); beside each disk file X, X.seal holds one record
// per unit: the id of the file whose key sealed it, the nonce and the tag.
// Each file has its own key, derived from the datastore's key and the
// file's random id (HKDF-SHA256), so that the number of units sealed under
// one key stays far below GCM's limit for random nonces; the unit's offset
// is authenticated, so units cannot be moved. A unit is always written
// whole (a smaller write reads, changes and reseals it), so each unit of a
// chain lives in one file, the newest one that has its record. Digests stay
// those of the plaintext: resume, verify and export work unchanged.
const (
	sealUnit      = 64 << 10
	sealMagic     = "RPLSEAL1"
	sealHeaderLen = 64
	sealIDLen     = 16
	sealRecordLen = sealIDLen + 12 + 16
	sealSuffix    = ".seal"
	// keyFileMax bounds a key file: 64 hex digits and a newline or two.
	keyFileMax = 4096
	// encryptionFile marks a datastore whose replicas are encrypted.
	encryptionFile = "encryption.json"
)

// Key is the datastore's key for encryption at rest.
type Key struct {
	master []byte
	id     string // names the key, not secret: the first bytes of a hash of it

	mu    sync.Mutex
	aeads map[[sealIDLen]byte]cipher.AEAD
}

// LoadKey reads a key file: 64 hexadecimal digits (32 bytes, e.g. `openssl
// rand -hex 32`) that only its owner may read.
func LoadKey(path string) (*Key, error) {
	b, err := secretfile.Read(path, keyFileMax)
	if err != nil {
		return nil, fmt.Errorf("encryption key: %w", err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("encryption key %s: want 64 hexadecimal digits (32 bytes)", path)
	}
	return NewKey(k)
}

// LoadKeyFile is LoadKey, with nil for an empty path (no encryption).
func LoadKeyFile(path string) (*Key, error) {
	if path == "" {
		return nil, nil
	}
	return LoadKey(path)
}

// NewKey returns the key of 32 bytes.
func NewKey(k []byte) (*Key, error) {
	if len(k) != 32 {
		return nil, fmt.Errorf("encryption key of %d bytes, want 32", len(k))
	}
	id := sha256.Sum256(append([]byte("replicator replica key id\x00"), k...))
	return &Key{master: bytes.Clone(k), id: hex.EncodeToString(id[:8]), aeads: map[[sealIDLen]byte]cipher.AEAD{}}, nil
}

// ID names the key (for messages and the datastore's marker).
func (k *Key) ID() string { return k.id }

// aead is the cipher of the file whose id is fileID.
func (k *Key) aead(fileID [sealIDLen]byte) (cipher.AEAD, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if a, ok := k.aeads[fileID]; ok {
		return a, nil
	}
	sub, err := hkdf.Key(sha256.New, k.master, nil, "replicator replica unit key "+hex.EncodeToString(fileID[:]), 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(sub)
	if err != nil {
		return nil, err
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	k.aeads[fileID] = a
	return a, nil
}

// sealFile is the record table beside one disk file.
type sealFile struct {
	path string
	f    *os.File
	id   [sealIDLen]byte
}

type sealRecord struct {
	file  [sealIDLen]byte
	nonce [12]byte
	tag   [16]byte
}

func (r sealRecord) present() bool { return r.file != [sealIDLen]byte{} }

func createSeal(path string, key *Key) error {
	var h [sealHeaderLen]byte
	copy(h[:], sealMagic)
	var id [sealIDLen]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	copy(h[8:], id[:])
	copy(h[8+sealIDLen:], key.id)
	binary.BigEndian.PutUint32(h[8+sealIDLen+16:], sealUnit)
	return atomicfile.WriteFile(path, h[:], 0o600)
}

func openSeal(path string, key *Key, writable bool) (*sealFile, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag|noFollow, 0)
	if err != nil {
		return nil, fmt.Errorf("open seal %s: %w", path, err)
	}
	var h [sealHeaderLen]byte
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, sealHeaderLen), h[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal %s: header: %w", path, err)
	}
	switch {
	case string(h[:8]) != sealMagic:
		f.Close()
		return nil, fmt.Errorf("seal %s: not a seal file (magic %q)", path, h[:8])
	case string(bytes.TrimRight(h[8+sealIDLen:8+sealIDLen+16], "\x00")) != key.id:
		f.Close()
		return nil, fmt.Errorf("seal %s: encrypted with key %q, the key given is %q", path, bytes.TrimRight(h[8+sealIDLen:8+sealIDLen+16], "\x00"), key.id)
	case binary.BigEndian.Uint32(h[8+sealIDLen+16:]) != sealUnit:
		f.Close()
		return nil, fmt.Errorf("seal %s: unit of %d bytes, want %d", path, binary.BigEndian.Uint32(h[8+sealIDLen+16:]), sealUnit)
	}
	s := &sealFile{path: path, f: f}
	copy(s.id[:], h[8:])
	return s, nil
}

func (s *sealFile) get(u int64) (sealRecord, error) {
	var b [sealRecordLen]byte
	var r sealRecord
	n, err := s.f.ReadAt(b[:], sealHeaderLen+u*sealRecordLen)
	if n < len(b) {
		if errors.Is(err, io.EOF) {
			return r, nil // past the records written: the unit is not in this file
		}
		return r, fmt.Errorf("seal %s: read record %d: %w", s.path, u, err)
	}
	copy(r.file[:], b[:])
	copy(r.nonce[:], b[sealIDLen:])
	copy(r.tag[:], b[sealIDLen+12:])
	return r, nil
}

func (s *sealFile) put(u int64, r sealRecord) error {
	var b [sealRecordLen]byte
	copy(b[:], r.file[:])
	copy(b[sealIDLen:], r.nonce[:])
	copy(b[sealIDLen+12:], r.tag[:])
	if _, err := s.f.WriteAt(b[:], sealHeaderLen+u*sealRecordLen); err != nil {
		return fmt.Errorf("seal %s: write record %d: %w", s.path, u, err)
	}
	return nil
}

// sealedFormat is a chain format whose files are encrypted units.
type sealedFormat struct {
	inner chainFormat
	key   *Key
}

func (f sealedFormat) createBase(path string, size int64, sectorSize int) (writableDisk, error) {
	if err := createSeal(path+sealSuffix, f.key); err != nil {
		return nil, err
	}
	d, err := f.inner.createBase(path, size, sectorSize)
	if err != nil {
		return nil, err
	}
	return f.wrap(d, []string{path}, true)
}

func (f sealedFormat) createChild(path, parent string, size int64, sectorSize int) (writableDisk, error) {
	if err := createSeal(path+sealSuffix, f.key); err != nil {
		return nil, err
	}
	d, err := f.inner.createChild(path, parent, size, sectorSize)
	if err != nil {
		return nil, err
	}
	return f.wrap(d, []string{path, parent}, true)
}

func (f sealedFormat) openWritable(chain []string) (writableDisk, error) {
	d, err := f.inner.openWritable(chain)
	if err != nil {
		return nil, err
	}
	return f.wrap(d, chain, true)
}

func (f sealedFormat) openReadOnly(chain []string, ignoreLinkage bool) (disk.Image, error) {
	d, err := f.inner.openReadOnly(chain, ignoreLinkage)
	if err != nil {
		return nil, err
	}
	return f.wrap(readOnly{d}, chain, false)
}

// merge merges the child's ciphertext into the parent, then its records:
// redone after a crash, both steps give the same result.
func (f sealedFormat) merge(ctx context.Context, child, parent string) error {
	if err := f.inner.merge(ctx, child, parent); err != nil {
		return err
	}
	cs, err := openSeal(child+sealSuffix, f.key, false)
	if err != nil {
		return err
	}
	defer cs.f.Close()
	ps, err := openSeal(parent+sealSuffix, f.key, true)
	if err != nil {
		return err
	}
	defer ps.f.Close()
	st, err := cs.f.Stat()
	if err != nil {
		return err
	}
	// The child's records in batches; only those present are copied.
	const batch = 4096
	buf := make([]byte, batch*sealRecordLen)
	var none [sealIDLen]byte
	for first := int64(0); sealHeaderLen+first*sealRecordLen < st.Size(); first += batch {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := cs.f.ReadAt(buf, sealHeaderLen+first*sealRecordLen)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("seal %s: read records: %w", cs.path, err)
		}
		for i := 0; (i+1)*sealRecordLen <= n; i++ {
			rec := buf[i*sealRecordLen : (i+1)*sealRecordLen]
			if bytes.Equal(rec[:sealIDLen], none[:]) {
				continue
			}
			if _, err := ps.f.WriteAt(rec, sealHeaderLen+(first+int64(i))*sealRecordLen); err != nil {
				return fmt.Errorf("seal %s: write record %d: %w", ps.path, first+int64(i), err)
			}
		}
	}
	return ps.f.Sync()
}

func (f sealedFormat) relink(child, parent string) error { return f.inner.relink(child, parent) }

// readOnly lets a read-only image stand where a writable one is expected.
type readOnly struct{ disk.Image }

func (readOnly) WriteAt([]byte, int64) (int, error) { return 0, errors.New("read-only") }
func (readOnly) Sync() error                        { return nil }

type innerDisk interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
	Size() int64
}

func (f sealedFormat) wrap(d innerDisk, chain []string, writable bool) (*sealedDisk, error) {
	s := &sealedDisk{inner: d, key: f.key, writable: writable}
	for i, p := range chain {
		sf, err := openSeal(p+sealSuffix, f.key, writable && i == 0)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.seals = append(s.seals, sf)
	}
	return s, nil
}

// sealedDisk decrypts what a chain holds and encrypts what is written to its leaf.
type sealedDisk struct {
	inner    innerDisk
	key      *Key
	seals    []*sealFile // chain order: the leaf first
	writable bool
}

func (s *sealedDisk) Size() int64 { return s.inner.Size() }

// SectorSize and Allocated pass through when the chain is a disk.Image.
func (s *sealedDisk) SectorSize() int {
	if img, ok := s.inner.(interface{ SectorSize() int }); ok {
		return img.SectorSize()
	}
	return 512
}

func (s *sealedDisk) Allocated() []disk.Extent {
	if img, ok := s.inner.(interface{ Allocated() []disk.Extent }); ok {
		return img.Allocated()
	}
	return []disk.Extent{{Offset: 0, Length: s.Size()}}
}

func (s *sealedDisk) unit(u int64) (off, n int64) {
	off = u * sealUnit
	return off, min(sealUnit, s.Size()-off)
}

// readUnit returns the plaintext of unit u into buf (len n).
func (s *sealedDisk) readUnit(u int64, buf []byte) error {
	off, n := s.unit(u)
	buf = buf[:n]
	for i, sf := range s.seals {
		r, err := sf.get(u)
		if err != nil {
			return err
		}
		if !r.present() {
			continue
		}
		if _, err := s.inner.ReadAt(buf, off); err != nil && !(errors.Is(err, io.EOF) && off+n == s.Size()) {
			return err
		}
		a, err := s.key.aead(r.file)
		if err != nil {
			return err
		}
		var aad [8]byte
		binary.BigEndian.PutUint64(aad[:], uint64(off))
		sealed := append(buf[:n:n], r.tag[:]...)
		if _, err := a.Open(buf[:0], r.nonce[:], sealed, aad[:]); err == nil {
			return nil
		}
		if s.writable && i == 0 && len(s.seals) > 1 {
			// The leaf's unit was torn by a crash (past the durable
			// position: its data and record disagree). What the point held
			// before it is the parents' unit; the sender rewrites this one.
			continue
		}
		return fmt.Errorf("encrypted unit at offset %d of %s does not authenticate: the file was altered or the key is wrong", off, sf.path)
	}
	clear(buf) // never written anywhere in the chain: zeros
	return nil
}

func (s *sealedDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > s.Size() {
		return 0, fmt.Errorf("read at offset %d: outside the disk (%d bytes)", off, s.Size())
	}
	want := len(p)
	if rest := s.Size() - off; int64(len(p)) > rest {
		p = p[:rest]
	}
	buf := make([]byte, sealUnit)
	done := 0
	for done < len(p) {
		at := off + int64(done)
		u := at / sealUnit
		uoff, n := s.unit(u)
		if err := s.readUnit(u, buf); err != nil {
			return done, err
		}
		done += copy(p[done:], buf[at-uoff:n])
	}
	if done < want {
		return done, io.EOF
	}
	return done, nil
}

func (s *sealedDisk) WriteAt(p []byte, off int64) (int, error) {
	if !s.writable {
		return 0, errors.New("read-only")
	}
	if off < 0 || off+int64(len(p)) > s.Size() {
		return 0, fmt.Errorf("write at offset %d length %d: outside the disk (%d bytes)", off, len(p), s.Size())
	}
	leaf := s.seals[0]
	a, err := s.key.aead(leaf.id)
	if err != nil {
		return 0, err
	}
	plain := make([]byte, sealUnit)
	out := make([]byte, 0, sealUnit+a.Overhead())
	done := 0
	for done < len(p) {
		at := off + int64(done)
		u := at / sealUnit
		uoff, n := s.unit(u)
		k := min(int64(len(p)-done), uoff+n-at)
		unit := plain[:n]
		if at != uoff || k != n {
			if err := s.readUnit(u, unit); err != nil { // a part of the unit: read, change, reseal
				return done, err
			}
		}
		copy(unit[at-uoff:], p[done:done+int(k)])
		r := sealRecord{file: leaf.id}
		if _, err := rand.Read(r.nonce[:]); err != nil {
			return done, err
		}
		var aad [8]byte
		binary.BigEndian.PutUint64(aad[:], uint64(uoff))
		out = a.Seal(out[:0], r.nonce[:], unit, aad[:])
		copy(r.tag[:], out[n:])
		if _, err := s.inner.WriteAt(out[:n], uoff); err != nil {
			return done, err
		}
		if err := leaf.put(u, r); err != nil {
			return done, err
		}
		done += int(k)
	}
	return done, nil
}

// Sync makes the ciphertext durable, then its records.
func (s *sealedDisk) Sync() error {
	if err := s.inner.Sync(); err != nil {
		return err
	}
	if s.writable && len(s.seals) > 0 {
		if err := s.seals[0].f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", s.seals[0].path, err)
		}
	}
	return nil
}

func (s *sealedDisk) Close() error {
	var errs []error
	for _, sf := range s.seals {
		errs = append(errs, sf.f.Close())
	}
	if s.inner != nil {
		errs = append(errs, s.inner.Close())
	}
	return errors.Join(errs...)
}
