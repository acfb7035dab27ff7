package hyperv

import (
	"strings"

	"github.com/replicator/replicator/internal/disk"
	"github.com/replicator/replicator/internal/diskimage"
)

// openImage opens a frozen VHDX/AVHDX file (with its parent chain) for reading.
var openImage func(path string) (disk.Image, error) = diskimage.Open

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
