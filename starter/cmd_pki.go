package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/replicator/replicator/internal/atomicfile"
	"github.com/replicator/replicator/internal/pki"
)

func init() { commands = append(commands, newPKICommand) }

// newPKICommand manages the private CA of the data channel outside --dev:
// `pki init DIR` creates the CA, `pki issue DIR NAME --host H…` gives one
// worker or agent a folder laid out like the --dev certificates
// (ca.pem, node.pem, node-key.pem), ready to mount at /etc/replicator/tls.
func newPKICommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Create the private CA of the data channel and issue worker and agent certificates",
		Long: "The data channel between proxies and agents is mutual TLS with certificates\n" +
			"signed by one private CA. `pki init DIR` creates it (DIR/ca.pem and\n" +
			"DIR/ca-key.pem; keep ca-key.pem away from the workers). `pki issue DIR NAME`\n" +
			"writes DIR/NAME/ with ca.pem, node.pem and node-key.pem: set tls.ca, tls.cert\n" +
			"and tls.key to them. An agent's certificate must name, with --host, every\n" +
			"host name or IP address the proxies dial it by (targets[].address).",
	}
	cmd.AddCommand(newPKIInitCommand(), newPKIIssueCommand())
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
			fmt.Fprintf(cmd.OutOrStdout(), "CA certificate %s\nCA key         %s (keep it off the workers)\n", ca.File, filepath.Join(dir, pki.CAKeyFile))
			return nil
		},
	}
}

func newPKIIssueCommand() *cobra.Command {
	var hosts []string
	cmd := &cobra.Command{
		Use:   "issue DIR NAME [--host H…]",
		Short: "Issue a certificate for a worker or an agent into DIR/NAME/",
		Long: "Issue a certificate for NAME (its common name, which the agent logs as the\n" +
			"peer) signed by the CA in DIR, usable both to serve an agent and to dial one.\n" +
			"Writes DIR/NAME/ca.pem (a copy of the CA certificate), DIR/NAME/node.pem and\n" +
			"DIR/NAME/node-key.pem (mode 0600). --host names the DNS names and IP\n" +
			"addresses of an agent, as in targets[].address; a proxy needs none.",
		Example: "  starter pki init deploy/tls\n" +
			"  starter pki issue deploy/tls agent --host agent --host dr01.example.internal\n" +
			"  starter pki issue deploy/tls worker",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := issueNodeFolder(args[0], args[1], hosts)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "tls:\n  ca: %s\n  cert: %s\n  key: %s\n", files.CA, files.Cert, files.Key)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "DNS name or IP address the certificate is valid for (repeatable)")
	return cmd
}

// issueNodeFolder issues a node certificate for name with the CA in caDir
// and lays it out in caDir/name/ like the --dev certificates. It refuses to
// touch an existing folder, so a certificate in use is never replaced.
func issueNodeFolder(caDir, name string, hosts []string) (pki.Files, error) {
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") || strings.ContainsAny(name, `/\:`) {
		return pki.Files{}, fmt.Errorf("pki issue: name %q must be a plain name (letters, digits, '-', '_'), it names the folder %s", name, filepath.Join(caDir, "NAME"))
	}
	for _, h := range hosts {
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
			return pki.Files{}, fmt.Errorf("pki issue: %s exists; remove it to issue %s again", out, name)
		}
		return pki.Files{}, fmt.Errorf("pki issue: %w", err)
	}
	issued, err := ca.IssueNode(out, name, hosts)
	if err != nil {
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
	// The folder must work as a whole: the same check an agent makes at start.
	if _, err := files.ServerTLS(); err != nil {
		return pki.Files{}, fmt.Errorf("pki issue %s: %w", name, err)
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
