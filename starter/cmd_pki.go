package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/pki"
)

// newPKICommand manages the private CA of the data channel outside --dev:
// `pki init DIR` creates the CA, `pki issue DIR NAME --role R --host H…` gives
// one worker or agent a folder laid out like the --dev certificates
// (ca.pem, node.pem, node-key.pem), ready to mount at /etc/replicator/tls;
// `pki renew` replaces a certificate before it expires, `pki revoke` lists it
// in the CA's revocation list.
func newPKICommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Create the private CA of the data channel; issue, renew and revoke certificates",
		Long: "The data channel between proxies and agents is mutual TLS with certificates\n" +
			"signed by one private CA. `pki init DIR` creates it (DIR/ca.pem and\n" +
			"DIR/ca-key.pem; keep ca-key.pem away from the workers). `pki issue DIR NAME\n" +
			"--role agent|proxy|client|temporal` writes DIR/NAME/ with ca.pem, node.pem and\n" +
			"node-key.pem: set tls.ca, tls.cert and tls.key to them. An agent accepts only\n" +
			"proxy certificates and a proxy only agent certificates; client certificates\n" +
			"are for the Temporal frontend (temporal.tls). An agent's certificate must\n" +
			"name, with --host, every host name or IP address the proxies dial it by\n" +
			"(targets[].address). Certificates live 90 days unless --days says otherwise:\n" +
			"`pki renew DIR NAME` issues the same certificate again. `pki revoke DIR NAME`\n" +
			"adds it to DIR/crl.pem; copy that file to every worker and set tls.crl.",
	}
	cmd.AddCommand(newPKIInitCommand(), newPKIIssueCommand(), newPKIRenewCommand(), newPKIRevokeCommand())
	return cmd
}

func newPKIInitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "init DIR",
		Short: "Create a CA: DIR/ca.pem and DIR/ca-key.pem",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			for _, name := range []string{pki.CAFile, pki.CAKeyFile} {
				if p := filepath.Join(dir, name); pkiFileExists(p) {
					return fmt.Errorf("pki init: %s exists; a new CA would invalidate every certificate it signed (remove it first to start over)", p)
				}
			}
			ca, err := pki.NewCA(dir)
			if err != nil {
				return fmt.Errorf("pki init %s: %w", dir, err)
			}
			type created struct {
				CA    string `json:"ca"`
				CAKey string `json:"caKey"`
			}
			res := created{ca.File, filepath.Join(dir, pki.CAKeyFile)}
			return emit(cmd, outputText, res, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "CA certificate %s\nCA key         %s (keep it off the workers)\n", res.CA, res.CAKey)
				return err
			})
		},
	}
}

func newPKIIssueCommand() *cobra.Command {
	var hosts, roles []string
	var days int
	cmd := &cobra.Command{
		Use:   "issue DIR NAME --role agent|proxy|client|temporal [--host H…] [--days N]",
		Short: "Issue a certificate for an agent, a proxy, a Temporal client or the Temporal server into DIR/NAME/",
		Long: "Issue a certificate for NAME (its common name, which the agent logs as the\n" +
			"peer) signed by the CA in DIR, carrying the roles given with --role: agent\n" +
			"(serves the data channel), proxy (sends disks to agents), client (of the\n" +
			"Temporal frontend), temporal (the Temporal server: its frontend and internode\n" +
			"TLS; no data channel accepts it). A process that is both agent and proxy takes\n" +
			"both roles; a worker that dials the frontend with mutual TLS adds client\n" +
			"(an agent's certificate alone has no client authentication).\n" +
			"Writes DIR/NAME/ca.pem (a copy of the CA certificate), DIR/NAME/node.pem and\n" +
			"DIR/NAME/node-key.pem (mode 0600). --host names the DNS names and IP\n" +
			"addresses of an agent, as in targets[].address; a proxy needs none.",
		Example: "  starter pki init deploy/tls\n" +
			"  starter pki issue deploy/tls temporal --role temporal --host temporal\n" +
			"  starter pki issue deploy/tls agent --role agent --role client --host agent --host dr01.example.internal\n" +
			"  starter pki issue deploy/tls proxy --role proxy --role client",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rs, err := parseRoles(roles)
			if err != nil {
				return err
			}
			files, err := issueNodeFolder(args[0], args[1], pki.Request{Name: args[1], Roles: rs, Hosts: hosts, Validity: time.Duration(days) * 24 * time.Hour})
			if err != nil {
				return err
			}
			return emit(cmd, outputText, pkiFiles{files.CA, files.Cert, files.Key}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "tls:\n  ca: %s\n  cert: %s\n  key: %s\n", files.CA, files.Cert, files.Key)
				return err
			})
		},
	}
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "DNS name or IP address the certificate is valid for (repeatable)")
	cmd.Flags().StringArrayVar(&roles, "role", nil, "agent, proxy, client or temporal (repeatable; required)")
	cmd.Flags().IntVar(&days, "days", 90, "validity in days (at most 397)")
	return cmd
}

func parseRoles(names []string) ([]pki.Role, error) {
	if len(names) == 0 {
		return nil, errors.New("pki issue: --role is required: agent (serves the data channel), proxy (sends to agents), client (of the Temporal frontend) or temporal (the Temporal server)")
	}
	var out []pki.Role
	for _, n := range names {
		for _, part := range strings.Split(n, ",") {
			r, err := pki.ParseRole(strings.TrimSpace(part))
			if err != nil {
				return nil, fmt.Errorf("pki issue: --role: %w", err)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func newPKIRenewCommand() *cobra.Command {
	var days int
	var revokeOld bool
	cmd := &cobra.Command{
		Use:   "renew DIR NAME [--days N] [--revoke-old]",
		Short: "Issue DIR/NAME/node.pem again (same name, roles and hosts) with a new key",
		Long: "Replaces DIR/NAME/node.pem and node-key.pem with a new key and a certificate of\n" +
			"the same name, roles and hosts, valid --days from now; restart the worker to\n" +
			"use it. --revoke-old also lists the old certificate in DIR/crl.pem.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			caDir, name := args[0], args[1]
			folder := filepath.Join(caDir, name)
			old := pki.Files{CA: filepath.Join(folder, pki.CAFile), Cert: filepath.Join(folder, pki.NodeFile), Key: filepath.Join(folder, pki.NodeKeyFile)}
			leaf, err := old.Leaf()
			if err != nil {
				return fmt.Errorf("pki renew: %w", err)
			}
			req := pki.Request{Name: leaf.Subject.CommonName, Roles: pki.RolesOf(leaf), Validity: time.Duration(days) * 24 * time.Hour}
			if len(req.Roles) == 0 {
				return fmt.Errorf("pki renew: %s carries no role (issued by an older version): issue a new one with `starter pki issue --role`", old.Cert)
			}
			req.Hosts = append(req.Hosts, leaf.DNSNames...)
			for _, ip := range leaf.IPAddresses {
				req.Hosts = append(req.Hosts, ip.String())
			}
			ca, err := pki.LoadCA(caDir)
			if err != nil {
				return fmt.Errorf("pki renew: %w", err)
			}
			tmp, err := os.MkdirTemp(caDir, ".renew-")
			if err != nil {
				return fmt.Errorf("pki renew: %w", err)
			}
			defer os.RemoveAll(tmp)
			issued, err := ca.Issue(tmp, req)
			if err != nil {
				return fmt.Errorf("pki renew %s: %w", name, err)
			}
			// Key first, then certificate: each rename is atomic; until both
			// are done the worker keeps running on what it loaded at start.
			for _, mv := range [][2]string{{issued.Key, old.Key}, {issued.Cert, old.Cert}} {
				if err := os.Rename(mv[0], mv[1]); err != nil {
					return fmt.Errorf("pki renew %s: %w", name, err)
				}
			}
			if err := atomicfile.SyncDir(folder); err != nil {
				return fmt.Errorf("pki renew %s: %w", name, err)
			}
			if _, err := old.Leaf(); err != nil {
				return fmt.Errorf("pki renew %s: %w", name, err)
			}
			type renewed struct {
				Cert     string `json:"cert"`
				NotAfter string `json:"notAfter"`
				Revoked  string `json:"revokedSerial,omitempty"`
				CRL      string `json:"crl,omitempty"`
			}
			res := renewed{Cert: old.Cert, NotAfter: time.Now().Add(req.Validity).UTC().Format(time.RFC3339)}
			if revokeOld {
				path, err := ca.Revoke(caDir, leaf.SerialNumber)
				if err != nil {
					return fmt.Errorf("pki renew %s: revoke the old certificate: %w", name, err)
				}
				res.Revoked, res.CRL = fmt.Sprintf("%x", leaf.SerialNumber), path
			}
			return emit(cmd, outputText, res, func(w io.Writer) error {
				if res.Revoked != "" {
					fmt.Fprintf(w, "revoked %s in %s\n", res.Revoked, res.CRL)
				}
				_, err := fmt.Fprintf(w, "renewed %s until %s\n", res.Cert, res.NotAfter)
				return err
			})
		},
	}
	cmd.Flags().IntVar(&days, "days", 90, "validity in days (at most 397)")
	cmd.Flags().BoolVar(&revokeOld, "revoke-old", false, "also revoke the certificate being replaced")
	return cmd
}

func newPKIRevokeCommand() *cobra.Command {
	var serialHex string
	cmd := &cobra.Command{
		Use:   "revoke DIR [NAME | --serial HEX]",
		Short: "Add a certificate (DIR/NAME/node.pem, or a serial number) to the CA's revocation list DIR/crl.pem",
		Long: "Agents and proxies whose tls.crl names a copy of DIR/crl.pem refuse the\n" +
			"revoked certificate at its next handshake (the file is re-read when it changes).",
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			caDir := args[0]
			var serial *big.Int
			switch {
			case len(args) == 2 && serialHex == "":
				f := pki.Files{Cert: filepath.Join(caDir, args[1], pki.NodeFile)}
				leaf, err := f.Leaf()
				if err != nil {
					return fmt.Errorf("pki revoke: %w", err)
				}
				serial = leaf.SerialNumber
			case len(args) == 1 && serialHex != "":
				n, ok := new(big.Int).SetString(strings.ReplaceAll(serialHex, ":", ""), 16)
				if !ok || n.Sign() <= 0 {
					return fmt.Errorf("pki revoke: --serial %q is not a hexadecimal serial number", serialHex)
				}
				serial = n
			default:
				return errors.New("pki revoke: give NAME or --serial, not both")
			}
			ca, err := pki.LoadCA(caDir)
			if err != nil {
				return fmt.Errorf("pki revoke: %w", err)
			}
			path, err := ca.Revoke(caDir, serial)
			if err != nil {
				return fmt.Errorf("pki revoke: %w", err)
			}
			type revoked struct {
				Serial string `json:"serial"`
				CRL    string `json:"crl"`
			}
			res := revoked{fmt.Sprintf("%x", serial), path}
			return emit(cmd, outputText, res, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "revoked %s in %s; copy it to every worker (tls.crl)\n", res.Serial, res.CRL)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&serialHex, "serial", "", "serial number of the certificate (hex)")
	return cmd
}

// pkiFiles is a certificate folder as --output json prints it: the keys of
// the tls section that use it.
type pkiFiles struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// issueNodeFolder issues a certificate with the CA in caDir and lays it out
// in caDir/name/ like the --dev certificates. It refuses to touch an
// existing folder, so a certificate in use is never replaced.
func issueNodeFolder(caDir, name string, req pki.Request) (pki.Files, error) {
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") || strings.ContainsAny(name, `/\:`) {
		return pki.Files{}, fmt.Errorf("pki issue: name %q must be a plain name (letters, digits, '-', '_'), it names the folder %s", name, filepath.Join(caDir, "NAME"))
	}
	for _, h := range req.Hosts {
		if !isHostName(h) {
			return pki.Files{}, fmt.Errorf("pki issue: --host %q is not a host name or IP address (no port, no scheme)", h)
		}
	}
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		return pki.Files{}, fmt.Errorf("pki issue: %w (create the CA with `starter pki init %s`)", err, caDir)
	}
	out := filepath.Join(caDir, name)
	if err := os.Mkdir(out, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return pki.Files{}, fmt.Errorf("pki issue: %s exists; remove it to issue %s again, or renew it with `starter pki renew`", out, name)
		}
		return pki.Files{}, fmt.Errorf("pki issue: %w", err)
	}
	issued, err := ca.Issue(out, req)
	if err != nil {
		os.RemoveAll(out)
		return pki.Files{}, fmt.Errorf("pki issue %s: %w", name, err)
	}
	files := pki.Files{
		CA:   filepath.Join(out, pki.CAFile),
		Cert: filepath.Join(out, pki.NodeFile),
		Key:  filepath.Join(out, pki.NodeKeyFile),
	}
	// Certificate first: for name "node-key" the key's file name is taken
	// by the certificate until it has moved.
	if err := os.Rename(issued.Cert, files.Cert); err != nil {
		return pki.Files{}, fmt.Errorf("pki issue %s: %w", name, err)
	}
	if err := os.Rename(issued.Key, files.Key); err != nil {
		return pki.Files{}, fmt.Errorf("pki issue %s: %w", name, err)
	}
	caPEM, err := os.ReadFile(ca.File)
	if err != nil {
		return pki.Files{}, fmt.Errorf("pki issue %s: %w", name, err)
	}
	if err := atomicfile.WriteFile(files.CA, caPEM, 0o644); err != nil {
		return pki.Files{}, fmt.Errorf("pki issue %s: %w", name, err)
	}
	if err := atomicfile.SyncDir(out); err != nil {
		return pki.Files{}, fmt.Errorf("pki issue %s: %w", name, err)
	}
	// The folder must work as a whole: the same check a worker makes at start.
	var check error
	switch {
	case slices.Contains(req.Roles, pki.RoleAgent):
		_, check = files.ServerTLS()
	case slices.Contains(req.Roles, pki.RoleProxy):
		_, check = files.ClientTLS()
	default:
		_, check = pki.TemporalTLS(files.CA, files.Cert, files.Key, "")
	}
	if check != nil {
		return pki.Files{}, fmt.Errorf("pki issue %s: %w", name, check)
	}
	return files, nil
}

func pkiFileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// isHostName reports whether h is an IP address or a DNS name (a wildcard
// label allowed), as a certificate names its hosts.
func isHostName(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '*' || r == '_') {
				return false
			}
		}
	}
	return true
}
