package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// crlValidity is how far ahead a new revocation list says the next one is due.
const crlValidity = 365 * 24 * time.Hour

// maxCRLBytes bounds the revocation list read from disk.
const maxCRLBytes = 16 << 20

// Revocations is the CA's revocation list as a peer checks it. The file is
// read again whenever it changes, so a revocation takes effect at the next
// handshake without restarting agents or proxies. A list that cannot be read
// or whose signature is not the CA's refuses every peer: failing open would
// let a revoked certificate back in.
type Revocations struct {
	path string
	ca   *x509.Certificate

	mu      sync.Mutex
	modTime time.Time
	size    int64
	serials map[string]bool
	err     error
}

// revocations returns the checker of f.CRL (nil when f has no CRL).
func (f Files) revocations() (*Revocations, error) {
	if f.CRL == "" {
		return nil, nil
	}
	ca, err := readCert(f.CA)
	if err != nil {
		return nil, err
	}
	r := &Revocations{path: f.CRL, ca: ca}
	if err := r.check(); err != nil {
		return nil, err
	}
	return r, nil
}

// Revoked reports whether serial is revoked, or the list is unusable.
func (r *Revocations) Revoked(serial *big.Int) bool {
	if r == nil {
		return false
	}
	if err := r.check(); err != nil {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.serials[serial.Text(16)]
}

// check reloads the list if the file changed and returns why it is unusable.
func (r *Revocations) check() error {
	st, err := os.Stat(r.path)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.err = fmt.Errorf("revocation list: %w", err)
		return r.err
	}
	if r.serials != nil && st.ModTime().Equal(r.modTime) && st.Size() == r.size {
		return r.err
	}
	list, err := ReadCRL(r.path, r.ca)
	r.modTime, r.size = st.ModTime(), st.Size()
	if err != nil {
		r.serials, r.err = map[string]bool{}, err
		return err
	}
	r.serials, r.err = map[string]bool{}, nil
	for _, e := range list.RevokedCertificateEntries {
		r.serials[e.SerialNumber.Text(16)] = true
	}
	return nil
}

// ReadCRL reads a PEM revocation list and checks that ca signed it.
func ReadCRL(path string, ca *x509.Certificate) (*x509.RevocationList, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	if st.Size() > maxCRLBytes {
		return nil, fmt.Errorf("revocation list %s: %d bytes, more than %d", path, st.Size(), maxCRLBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "X509 CRL" {
		return nil, fmt.Errorf("revocation list %s: no PEM X509 CRL", path)
	}
	list, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("revocation list %s: %w", path, err)
	}
	if err := list.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("revocation list %s: not signed by the CA %q: %w", path, ca.Subject.CommonName, err)
	}
	return list, nil
}

// Revoke adds serials to the CA's revocation list dir/crl.pem (creating
// it), signed by the CA, with a number one higher than the last.
func (ca *CA) Revoke(dir string, serials ...*big.Int) (string, error) {
	path := filepath.Join(dir, CRLFile)
	tmpl := &x509.RevocationList{Number: big.NewInt(1)}
	old, err := ReadCRL(path, ca.Cert)
	switch {
	case err == nil:
		tmpl.RevokedCertificateEntries = old.RevokedCertificateEntries
		tmpl.Number = new(big.Int).Add(old.Number, big.NewInt(1))
	case errors.Is(err, fs.ErrNotExist):
	default:
		return "", err
	}
	now := time.Now()
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now})
	}
	tmpl.ThisUpdate, tmpl.NextUpdate = now, now.Add(crlValidity)
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return "", fmt.Errorf("create revocation list: %w", err)
	}
	// Readable by the workers that check it; only the CA can sign it.
	if err := writePEMMode(path, "X509 CRL", der, 0o644); err != nil {
		return "", err
	}
	return path, nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("read certificate %s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read certificate %s: %w", path, err)
	}
	return c, nil
}
