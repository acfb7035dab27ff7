// Package pki is the private certificate authority of the data channel: it
// creates a CA, issues short-lived ECDSA P-256 certificates that carry the
// role of their holder (agent, proxy, client of the Temporal frontend, or
// the Temporal server itself),
// keeps a list of revoked serial numbers, and builds the mutual-TLS
// configurations both ends use: an agent accepts only proxies, a proxy only
// agents, and neither accepts a revoked certificate. `workers --dev` calls
// EnsureDev to generate one CA and one node certificate (agent and proxy, for
// the one process that is both) under its data directory on first start and
// to reuse them afterwards.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/replicator/replicator/internal/atomicfile"
)

// File names inside a PKI directory.
const (
	CRLFile     = "crl.pem"
	CAFile      = "ca.pem"
	CAKeyFile   = "ca-key.pem"
	NodeFile    = "node.pem"
	NodeKeyFile = "node-key.pem"
)

// Validity of generated certificates: leaves are short-lived and renewed
// (`starter pki renew`), so a stolen key is useful for weeks, not years.
const (
	caValidity = 5 * 365 * 24 * time.Hour
	// DefaultValidity is the lifetime of an issued certificate.
	DefaultValidity = 90 * 24 * time.Hour
	// MaxValidity bounds what an operator may ask for.
	MaxValidity = 397 * 24 * time.Hour
)

// Role is what a certificate's holder may do; it is written into the
// certificate as a URI SAN (urn:replicator:role:<role>) and checked by peers.
type Role string

// Roles.
const (
	// RoleAgent serves the data channel (server authentication).
	RoleAgent Role = "agent"
	// RoleProxy sends disks to agents (client authentication).
	RoleProxy Role = "proxy"
	// RoleClient is a client of the Temporal frontend (client authentication).
	RoleClient Role = "client"
	// RoleTemporal is the Temporal server: its frontend serves clients and
	// its services dial each other (internode mutual TLS), so it has both
	// server and client authentication, yet no data-channel role: neither an
	// agent nor a proxy accepts it.
	RoleTemporal Role = "temporal"
)

const roleURIPrefix = "urn:replicator:role:"

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAgent, RoleProxy, RoleClient, RoleTemporal:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want agent, proxy, client or temporal", s)
}

// RolesOf lists the roles a certificate carries.
func RolesOf(c *x509.Certificate) []Role {
	var out []Role
	for _, u := range c.URIs {
		if s := u.String(); strings.HasPrefix(s, roleURIPrefix) {
			if r, err := ParseRole(strings.TrimPrefix(s, roleURIPrefix)); err == nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// HasRole reports whether a certificate carries role.
func HasRole(c *x509.Certificate, role Role) bool {
	return slices.Contains(RolesOf(c), role)
}

// Files names the PEM files of one party: the CA that signs its peers, its
// certificate and its private key (the same shape as config.TLS), and the
// CA's revocation list (optional).
type Files struct {
	CA   string
	Cert string
	Key  string
	// CRL is the PEM X.509 revocation list the CA signed (`starter pki
	// revoke`); peers whose serial it lists are refused. Empty: none.
	CRL string
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

// Request says what certificate to issue.
type Request struct {
	// Name is the common name (the peer name agents log) and the file name.
	Name string
	// Roles are what the holder may do (at least one).
	Roles []Role
	// Hosts are the DNS names and IP addresses an agent is dialled by.
	Hosts []string
	// Validity is the lifetime (DefaultValidity when zero, at most MaxValidity).
	Validity time.Duration
}

// Issue issues a certificate and writes dir/<name>.pem and dir/<name>-key.pem
// (mode 0600). Its extended key usages follow its roles: server
// authentication for an agent, client authentication for a proxy or a
// Temporal client, both for the Temporal server.
func (ca *CA) Issue(dir string, req Request) (Files, error) {
	name := req.Name
	if name == "" || filepath.Base(name) != name || name == "." || name == ".." {
		return Files{}, fmt.Errorf("issue certificate: name %q is not a plain file name", name)
	}
	if len(req.Roles) == 0 {
		return Files{}, fmt.Errorf("issue certificate %s: no role (agent, proxy, client or temporal)", name)
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultValidity
	}
	if validity < 0 || validity > MaxValidity {
		return Files{}, fmt.Errorf("issue certificate %s: validity %s outside (0, %s]", name, validity, MaxValidity)
	}
	var usage []x509.ExtKeyUsage
	var uris []*url.URL
	for _, r := range req.Roles {
		if _, err := ParseRole(string(r)); err != nil {
			return Files{}, fmt.Errorf("issue certificate %s: %w", name, err)
		}
		var us []x509.ExtKeyUsage
		switch r {
		case RoleAgent:
			us = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		case RoleTemporal:
			us = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		default:
			us = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		for _, u := range us {
			if !slices.Contains(usage, u) {
				usage = append(usage, u)
			}
		}
		uri, _ := url.Parse(roleURIPrefix + string(r))
		uris = append(uris, uri)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, fmt.Errorf("generate key for %s: %w", name, err)
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		return Files{}, fmt.Errorf("issue certificate %s: it would outlive the CA (valid until %s); create a new CA", name, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"replicator"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		URIs:         uris,
	}
	for _, h := range req.Hosts {
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

// devRenewBefore: a --dev node certificate this close to its end is renewed at start.
const devRenewBefore = 30 * 24 * time.Hour

// EnsureDev returns the --dev certificates under dir: ca.pem, node.pem (roles
// agent and proxy, for 127.0.0.1, localhost and ::1) and node-key.pem. It
// generates them on first start and reuses them afterwards; a node
// certificate missing beside an existing CA, without roles (made by an older
// version), or within 30 days of its end is issued again by that CA.
func EnsureDev(dir string) (Files, error) {
	f := Files{
		CA:   filepath.Join(dir, CAFile),
		Cert: filepath.Join(dir, NodeFile),
		Key:  filepath.Join(dir, NodeKeyFile),
	}
	if exists(f.CA) && exists(f.Cert) && exists(f.Key) {
		leaf, err := f.Leaf()
		if err == nil && HasRole(leaf, RoleAgent) && HasRole(leaf, RoleProxy) && time.Until(leaf.NotAfter) > devRenewBefore {
			if _, err := f.ServerTLS(); err != nil {
				return Files{}, fmt.Errorf("dev certificates in %s: %w", dir, err)
			}
			return f, nil
		}
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
	if _, err := ca.Issue(dir, Request{Name: "node", Roles: []Role{RoleAgent, RoleProxy}, Hosts: DevHosts}); err != nil {
		return Files{}, err
	}
	return f, nil
}

// Leaf parses the certificate file.
func (f Files) Leaf() (*x509.Certificate, error) { return readCert(f.Cert) }

// ServerTLS is the agent's side: TLS 1.3 only, this party's certificate must
// carry the agent role, and a client certificate signed by the CA, carrying
// the proxy role and not revoked, is required.
func (f Files) ServerTLS() (*tls.Config, error) {
	pool, cert, crl, err := f.loadWithRevocations(RoleAgent)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cert},
		ClientCAs:        pool,
		ClientAuth:       tls.RequireAndVerifyClientCert,
		VerifyConnection: verifyPeer(RoleProxy, crl),
	}, nil
}

// ClientTLS is the proxy's side: TLS 1.3 only, this party's certificate must
// carry the proxy role, and the agent's certificate is verified against the
// CA (and, as usual, its name against the dialled host), must carry the
// agent role and must not be revoked.
func (f Files) ClientTLS() (*tls.Config, error) {
	pool, cert, crl, err := f.loadWithRevocations(RoleProxy)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cert},
		RootCAs:          pool,
		VerifyConnection: verifyPeer(RoleAgent, crl),
	}, nil
}

// verifyPeer refuses a peer whose certificate lacks role or is revoked. It
// runs after the chain was verified, on every handshake (resumed ones too).
func verifyPeer(role Role, crl *Revocations) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("peer presented no certificate")
		}
		leaf := cs.PeerCertificates[0]
		if !HasRole(leaf, role) {
			return fmt.Errorf("peer certificate %q (serial %x) carries roles %v, not %s", leaf.Subject.CommonName, leaf.SerialNumber, RolesOf(leaf), role)
		}
		if crl.Revoked(leaf.SerialNumber) {
			return fmt.Errorf("peer certificate %q (serial %x) is revoked", leaf.Subject.CommonName, leaf.SerialNumber)
		}
		return nil
	}
}

// TemporalTLS is a client's TLS to the Temporal frontend: the server
// verified against ca (the system roots when ca is empty), and cert/key
// presented when set (mutual TLS); ca alone is server-authenticated TLS.
func TemporalTLS(ca, cert, key, serverName string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if ca != "" {
		caPEM, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("read CA %s: no PEM certificate", ca)
		}
		c.RootCAs = pool
	}
	if cert != "" || key != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("load certificate %s with key %s: %w", cert, key, err)
		}
		// A frontend with mutual TLS refuses a certificate without client
		// authentication only as "bad certificate"; say which file and why
		// here. (No extended key usage at all means any usage.)
		if leaf := pair.Leaf; leaf != nil && len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
			return nil, fmt.Errorf("certificate %s (%q, roles %v) has no client authentication, which the Temporal frontend requires: issue it with the client role too (`starter pki issue DIR NAME --role %s --role client`) or set temporal.tls.cert to a client certificate", cert, leaf.Subject.CommonName, RolesOf(leaf), RoleAgent)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// load reads the CA pool and this party's certificate, which must carry role.
// loadWithRevocations is load and the revocation list, for the data
// channel's two ends.
func (f Files) loadWithRevocations(role Role) (*x509.CertPool, tls.Certificate, *Revocations, error) {
	pool, cert, err := f.load(role)
	if err != nil {
		return nil, tls.Certificate{}, nil, err
	}
	crl, err := f.revocations()
	if err != nil {
		return nil, tls.Certificate{}, nil, err
	}
	return pool, cert, crl, nil
}

func (f Files) load(role Role) (*x509.CertPool, tls.Certificate, error) {
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
	if !HasRole(cert.Leaf, role) {
		return nil, tls.Certificate{}, fmt.Errorf("certificate %s (%q) carries roles %v, not %s: issue one with `starter pki issue DIR NAME --role %s`", f.Cert, cert.Leaf.Subject.CommonName, RolesOf(cert.Leaf), role, role)
	}
	if time.Now().After(cert.Leaf.NotAfter) {
		return nil, tls.Certificate{}, fmt.Errorf("certificate %s expired on %s: renew it with `starter pki renew`", f.Cert, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
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
	return writePEMMode(path, typ, der, 0o600)
}

func writePEMMode(path, typ string, der []byte, mode os.FileMode) error {
	return atomicfile.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}
