package hyperv

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/diskimage"
	"github.com/replicator/replicator/internal/provider"
	"github.com/replicator/replicator/internal/vhdx"
)

// openImage opens a frozen VHDX/AVHDX file for reading. parents, when
// given, is its chain from its parent to the base, as this machine reaches
// them; otherwise the file's parent locators are followed.
var openImage = func(path string, parents []string) (disk.Image, error) {
	if len(parents) == 0 {
		return diskimage.Open(path)
	}
	return vhdx.OpenWith(path, vhdx.OpenOptions{Parents: parents})
}

// maxParentChain bounds the differencing chain asked of the host.
const maxParentChain = 1024

// shareConnector opens an SMB session to a share (\\host\D$) with the
// host's configured account, so that files are read with it and not with
// the worker's own.
type shareConnector interface {
	connect(ctx context.Context, share string) error
}

// shareRoot is the administrative share a remote path lies on: \\host\D$
// for \\host\D$\VMs\a.vhdx, \\filer\vms for \\filer\vms\a.vhdx.
func shareRoot(p string) (string, bool) {
	if !strings.HasPrefix(p, `\\`) {
		return "", false
	}
	parts := strings.SplitN(p[2:], `\`, 3)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return "", false
	}
	return `\\` + parts[0] + `\` + parts[1], true
}

// openHostFile opens a disk file of the host with its differencing chain:
// on a remote host through its administrative share, over an SMB session
// with the host's account, and with every parent as the host names it
// (GetVirtualHardDiskSettingData's ParentPath) mapped to the share — never
// a parent's absolute_win32_path tried on this machine's own drives.
func (p *Provider) openHostFile(ctx context.Context, hostPath string) (disk.Image, error) {
	name := hostFilePath(p.remoteHost, hostPath)
	if p.remoteHost == "" {
		return openImage(name, nil)
	}
	var parents []string
	for cur := hostPath; ; {
		info, err := p.vhdInfo(ctx, cur)
		if err != nil {
			return nil, err
		}
		if info.parent == "" {
			break
		}
		if len(parents) == maxParentChain {
			return nil, &Error{Op: "open " + name, Description: fmt.Sprintf("differencing chain longer than %d", maxParentChain)}
		}
		parents = append(parents, hostFilePath(p.remoteHost, info.parent))
		cur = info.parent
	}
	shares := map[string]bool{}
	for _, f := range append([]string{name}, parents...) {
		root, ok := shareRoot(f)
		if !ok || shares[root] {
			continue
		}
		shares[root] = true
		if err := p.shares.connect(ctx, root); err != nil {
			return nil, shareError(root, p.shareUser, err)
		}
	}
	return openImage(name, parents)
}

// errShareRefused: the share answered but refused the account.
var errShareRefused = errors.New("share refused the account")

// shareError says which share could not be reached, with which account,
// and what to check.
func shareError(root, user string, err error) error {
	account := "the worker's own account"
	if user != "" {
		account = "account " + user
	}
	if errors.Is(err, errShareRefused) {
		return &Error{Op: "connect to " + root, Description: fmt.Sprintf("%s was refused (it must be an administrator of the host to use its administrative shares)", account), err: err}
	}
	return &Error{Op: "connect to " + root, Description: fmt.Sprintf("share unreachable with %s (is SMB, TCP 445, open from this machine to the host, and are administrative shares enabled?)", account),
		err: fmt.Errorf("%w: %v", provider.ErrHostUnreachable, err), retryable: true}
}

// hostFilePath turns a path on the Hyper-V host into one this machine can
// open: unchanged for the local host and for UNC paths, else through the
// remote host's administrative share (C:\VMs\a.vhdx → \\host\C$\VMs\a.vhdx).
func hostFilePath(remoteHost, p string) string {
	if remoteHost == "" || strings.HasPrefix(p, `\\`) {
		return p
	}
	if len(p) >= 2 && p[1] == ':' && isDriveLetter(p[0]) {
		return `\\` + remoteHost + `\` + string(p[0]) + `$` + p[2:]
	}
	return p
}

func isDriveLetter(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
