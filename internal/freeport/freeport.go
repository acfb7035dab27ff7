// Package freeport finds a TCP port on which nothing listens and which the
// kernel will not hand out on its own: ports below the ephemeral range.
//
// A port picked by listening on port 0 comes from the ephemeral range, the
// same range the kernel draws the source ports of outgoing connections from.
// Between the moment such a port is picked and the moment its server binds
// it, any connection the process makes (an embedded Temporal server makes
// hundreds while it starts) may take it as its source port, and the bind
// then fails with "address already in use". A port below the range is only
// ever taken by someone who asks for it by number.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// lowest is the first port tried: above the well-known and most registered
// service ports that a test machine may run.
const lowest = 10000

// defaultEphemeralStart is where the ephemeral range starts when the system
// does not say: Linux's default (32768); Windows and the BSDs start higher
// (49152), so ports below 32768 are outside theirs too.
const defaultEphemeralStart = 32768

// rangeFile is where Linux keeps the ephemeral range ("32768\t60999").
const rangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// Port is a port on host (an IP address, "127.0.0.1" for loopback) that
// nothing listened on a moment ago, below the ephemeral range. The caller
// binds it soon; nothing reserves it.
func Port(host string) (int, error) {
	top := ephemeralStart()
	if top <= lowest+100 {
		return 0, fmt.Errorf("the ephemeral port range starts at %d (%s): no room below it for fixed ports", top, rangeFile)
	}
	var last error
	for range 200 {
		port := lowest + rand.IntN(top-lowest)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			last = err
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port on %s between %d and %d after 200 tries: %w", host, lowest, top, last)
}

// ephemeralStart is the first port of the kernel's ephemeral range.
func ephemeralStart() int {
	b, err := os.ReadFile(rangeFile)
	if err != nil {
		return defaultEphemeralStart
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return defaultEphemeralStart
	}
	n, err := strconv.Atoi(fields[0])
	if err != nil || n <= 0 || n > 65535 {
		return defaultEphemeralStart
	}
	return n
}
