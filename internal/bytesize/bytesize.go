// Package bytesize writes byte counts for people ("1.5 GiB"). It is pure
// (no I/O, no clock), so workflows may use it.
package bytesize

import "fmt"

// Text is n in binary units with one decimal: "512 B", "1.5 KiB", "2.0 GiB".
// A count below 1 KiB (negative ones too) is written in bytes.
func Text(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
