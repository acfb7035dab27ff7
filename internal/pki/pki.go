// Package pki is the private certificate authority of the data channel: it
// creates a CA, issues ECDSA P-256 certificates for agents and proxies, and
// builds the mutual-TLS configurations both ends use. `workers --dev` calls
// EnsureDev to generate one CA and one node certificate under its data
// directory on first start and to reuse them afterwards.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"github.com/replicator/replicator/internal/atomicfile"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names inside a PKI directory.
const (
	CAFile      = "ca.pem"
	CAKeyFile   = "ca-key.pem"
	NodeFile    = "node.pem"
	NodeKeyFile = "node-key.pem"
)

// Validity of generated certificates.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 5 * 365 * 24 * time.Hour
)

// Files names the PEM files of one party: the CA that signs its peers, its
// certificate and its private key (the same shape as config.TLS).
type Files struct {
	CA   string
	Cert string
	Key  string
}

// CA is a certificate authority whose key is at hand.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// File is the PEM file of the CA certificate.
	File string
}

// NewCA creates a CA and writes dir/ca.pem and dir/ca-key.pem (mode 0600).
func NewCA(dir string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "replicator CA", Organization: []string{"replicator"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	ca := &CA{Cert: cert, Key: key, File: filepath.Join(dir, CAFile)}
	if err := writeKey(filepath.Join(dir, CAKeyFile), key); err != nil {
		return nil, err
	}
	if err := writePEM(ca.File, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	return ca, nil
}

// LoadCA reads dir/ca.pem and dir/ca-key.pem.
func LoadCA(dir string) (*CA, error) {
	certFile, keyFile := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", certFile, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load CA %s: key is %T, want ECDSA", keyFile, pair.PrivateKey)
	}
	if !pair.Leaf.IsCA {
		return nil, fmt.Errorf("load CA %s: not a CA certificate", certFile)
	}
	return &CA{Cert: pair.Leaf, Key: key, File: certFile}, nil
}

// IssueServer issues a server certificate for hosts (DNS names or IP
// addresses) and writes dir/<name>.pem and dir/<name>-key.pem.
func (ca *CA) IssueServer(dir, name string, hosts []string) (Files, error) {
	return ca.issue(dir, name, hosts, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
}

// IssueClient issues a client certificate whose common name is name (the agent
// sees it as the peer) and writes dir/<name>.pem and dir/<name>-key.pem.
func (ca *CA) IssueClient(dir, name string) (Files, error) {
	return ca.issue(dir, name, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
}

// IssueNode issues a certificate usable both as server and as client, for a
// process that runs an agent and a proxy at once.
func (ca *CA) IssueNode(dir, name string, hosts []string) (Files, error) {
	return ca.issue(dir, name, hosts, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
}

func (ca *CA) issue(dir, name string, hosts []string, usage []x509.ExtKeyUsage) (Files, error) {
	if name == "" || filepath.Base(name) != name || name == "." || name == ".." {
		return Files{}, fmt.Errorf("issue certificate: name %q is not a plain file name", name)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, fmt.Errorf("generate key for %s: %w", name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"replicator"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return Files{}, fmt.Errorf("create certificate %s: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Files{}, fmt.Errorf("create %s: %w", dir, err)
	}
	f := Files{CA: ca.File, Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	if err := writeKey(f.Key, key); err != nil {
		return Files{}, err
	}
	if err := writePEM(f.Cert, "CERTIFICATE", der); err != nil {
		return Files{}, err
	}
	return f, nil
}

// DevHosts are the names in the --dev node certificate.
var DevHosts = []string{"127.0.0.1", "localhost", "::1"}

// EnsureDev returns the --dev certificates under dir: ca.pem, node.pem (server
// and client usage, for 127.0.0.1, localhost and ::1) and node-key.pem. It
// generates them on first start and reuses them afterwards; a node
// certificate missing beside an existing CA is issued again by that CA.
func EnsureDev(dir string) (Files, error) {
	f := Files{
		CA:   filepath.Join(dir, CAFile),
		Cert: filepath.Join(dir, NodeFile),
		Key:  filepath.Join(dir, NodeKeyFile),
	}
	if exists(f.CA) && exists(f.Cert) && exists(f.Key) {
		if _, err := f.ServerTLS(); err != nil {
			return Files{}, fmt.Errorf("dev certificates in %s: %w", dir, err)
		}
		return f, nil
	}
	var ca *CA
	var err error
	if exists(f.CA) {
		if ca, err = LoadCA(dir); err != nil {
			return Files{}, err
		}
	} else if ca, err = NewCA(dir); err != nil {
		return Files{}, err
	}
	if _, err := ca.IssueNode(dir, "node", DevHosts); err != nil {
		return Files{}, err
	}
	return f, nil
}

// ServerTLS is the agent's side: TLS 1.3 only, and a client certificate
// signed by the CA is required.
func (f Files) ServerTLS() (*tls.Config, error) {
	pool, cert, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// ClientTLS is the proxy's side: TLS 1.3 only, the server verified against
// the CA (and, as usual, its name against the dialed host), and this party's
// certificate presented.
func (f Files) ClientTLS() (*tls.Config, error) {
	pool, cert, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
	}, nil
}

func (f Files) load() (*x509.CertPool, tls.Certificate, error) {
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, tls.Certificate{}, fmt.Errorf("read CA %s: no PEM certificate", f.CA)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("load certificate %s with key %s: %w", f.Cert, f.Key, err)
	}
	return pool, cert, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil { // crypto/rand does not fail on supported platforms
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", path, err)
	}
	return writePEM(path, "PRIVATE KEY", der)
}

// writePEM writes a PEM block durably and atomically with mode 0600:
// temporary file, fsync, rename, fsync of the directory.
func writePEM(path, typ string, der []byte) error {
	return atomicfile.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
