//go:build windows

package secretfile

import "io/fs"

// privateMode: on Windows access is governed by the file's ACL, which the
// mode bits do not describe; the folder's ACL must keep the key private.
func privateMode(path string, mode fs.FileMode) error { return nil }
