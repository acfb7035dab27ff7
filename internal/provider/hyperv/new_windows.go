//go:build windows

package hyperv

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/replicator/replicator/config"
)

// New connects to the Hyper-V host of the configuration: host.Path names the
// WMI host ("." or empty for this machine); Username and PasswordFile
// authenticate to a remote host. The password is read from its file and
// never logged.
func New(ctx context.Context, host config.Host, opts Options) (*Provider, error) {
	c, err := connect(ctx, host)
	if err != nil {
		return nil, err
	}
	p := newProvider(c, c.server, opts)
	if c.server != "" && c.user != "" {
		// Files of the remote host are read with its account too, not
		// only WMI.
		p.shares, p.shareUser = &smbSession{user: c.user, password: c.password, open: map[string]bool{}}, c.user
	}
	return p, nil
}

// Connect opens WMI on the host of the configuration (see New).
func Connect(ctx context.Context, host config.Host) (WMI, error) { return connect(ctx, host) }

func connect(ctx context.Context, host config.Host) (*comClient, error) {
	server := strings.TrimSpace(host.Path)
	remote := ""
	if !isLocalHost(server) {
		remote = server
	}
	var user, password string
	if remote != "" && host.Username != "" {
		user = host.Username
		if host.PasswordFile != "" {
			b, err := os.ReadFile(host.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("host %q: read password file: %w", host.Name, err)
			}
			password = strings.TrimRight(string(b), "\r\n")
		}
	}
	c, err := dialWMI(ctx, remote, user, password)
	if err != nil {
		return nil, fmt.Errorf("host %q: connect to WMI on %s: %w", host.Name, displayHost(remote), err)
	}
	return c, nil
}

func displayHost(remote string) string {
	if remote == "" {
		return "the local host"
	}
	return remote
}
