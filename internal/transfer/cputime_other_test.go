//go:build !unix

package transfer_test

import "time"

// cpuTime is not measured here; CPU metrics of benchmarks read as infinite.
func cpuTime() time.Duration { return 0 }
