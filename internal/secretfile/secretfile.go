// Package secretfile reads files that hold keys: a regular file, no larger
// than its kind of key can be, that only its owner may read or write (on
// Unix; on Windows the file's ACL governs access and is not checked here).
package secretfile

import (
	"fmt"
	"os"
	"strings"
)

// Read returns the content of a key file, refusing one that its group or
// others may access, that is not a regular file, that is larger than max
// bytes, or that is empty.
func Read(path string, max int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if err := privateMode(path, st.Mode()); err != nil {
		return nil, err
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", path, st.Size(), max)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return b, nil
}
