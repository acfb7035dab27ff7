//go:build !windows

package secretfile

import (
	"fmt"
	"io/fs"
)

// privateMode refuses a secret file that its group or others may read or write.
func privateMode(path string, mode fs.FileMode) error {
	if mode.Perm()&0o077 != 0 {
		return fmt.Errorf("%s has mode %v: a key file must be readable by its owner only (chmod 600)", path, mode.Perm())
	}
	return nil
}
