// Package names is replicator's one rule for the names it turns into folder
// and file names: jobs, hosts, targets and agents of the configuration, VM,
// disk, checkpoint and restore point ids on the data channel and the target
// datastore, and VM folders of the lab host.
//
// Every such name must be usable as one path element on Linux and on Windows
// alike (Check), because a replica written by an agent on one may be read on
// the other and because a name is never allowed to reach outside the folder
// it is joined to. Names the operator chooses for replicator's own objects
// (Plain) are further held to ASCII letters, digits, '.', '_' and '-':
// replicator writes them into other identifiers (task queues "source-<host>",
// schedules "replication-<job>", checkpoint names "replicator <job> <vm>")
// where a space or a character outside ASCII would be ambiguous or refused.
// VM names and ids come from the virtualization host, where Hyper-V allows
// spaces and any Unicode letter, so they are held to Check only.
//
// Both rules share one length limit, MaxLen bytes. Replica folders on
// existing datastores are named by job and VM id, which the agent has always
// refused beyond 64 bytes, so the limit accepts every replica already
// written.
package names

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLen is the longest name, in bytes of UTF-8.
const MaxLen = 64

// Error says which name was refused and why.
type Error struct {
	Kind    string // what the name names ("job", "vm", "disk", …); empty when the caller says it
	Name    string
	Problem string // a predicate: "contains a path separator", "is not a file name", …
}

func (e *Error) Error() string {
	if e.Kind == "" {
		return fmt.Sprintf("name %q %s", e.Name, e.Problem)
	}
	return fmt.Sprintf("%s name %q %s", e.Kind, e.Name, e.Problem)
}

// Check reports whether name can be one path element on Linux and Windows:
// not empty, "." or "..", at most MaxLen bytes of valid UTF-8, without a
// control character, a path separator or a character Windows refuses in file
// names (: * ? " < > |), not ending in a dot or a space (Windows strips them,
// which would make two names one folder), and not a Windows device name
// (CON, PRN, AUX, NUL, COM0-9, LPT0-9, CONIN$, CONOUT$, with or without an
// extension). kind names what the name is for the error.
func Check(kind, name string) error {
	if p := problem(name); p != "" {
		return &Error{Kind: kind, Name: name, Problem: p}
	}
	return nil
}

// Plain reports whether name passes Check and holds only ASCII letters,
// digits, '.', '_' and '-': the rule for the names an operator gives hosts,
// targets, agents and jobs.
func Plain(kind, name string) error {
	// Characters first: for a name of these characters only, bytes and
	// characters are one count.
	for _, r := range name {
		if r == 0 || r == '/' || r == '\\' {
			break // Check names these more precisely
		}
		if !plainRune(r) {
			return &Error{Kind: kind, Name: name, Problem: fmt.Sprintf("contains %q: use only letters, digits, '.', '_' and '-'", r)}
		}
	}
	return Check(kind, name)
}

func plainRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

func problem(name string) string {
	switch {
	case name == "":
		return "is empty"
	case strings.ContainsRune(name, 0):
		return "contains a NUL byte, a control character"
	case strings.ContainsAny(name, `/\`):
		return "contains a path separator"
	case name == "." || name == "..":
		return "is not a file name"
	case len(name) > MaxLen:
		if utf8.RuneCountInString(name) == len(name) {
			return fmt.Sprintf("is %d characters long: at most %d", len(name), MaxLen)
		}
		return fmt.Sprintf("is %d bytes long in UTF-8: at most %d", len(name), MaxLen)
	case !utf8.ValidString(name):
		return "is not valid UTF-8"
	}
	for _, r := range name {
		switch {
		case unicode.IsControl(r):
			return fmt.Sprintf("contains a control character (%U)", r)
		case strings.ContainsRune(`:*?"<>|`, r):
			return fmt.Sprintf("contains %q, which Windows refuses in file names", r)
		}
	}
	if strings.TrimRight(name, ". ") != name {
		return "ends with a dot or a space"
	}
	if deviceName(name) {
		return "is a Windows device name"
	}
	return ""
}

// deviceName reports whether Windows resolves name to a device in every
// folder: the reserved names listed in "Naming Files, Paths, and Namespaces"
// (learn.microsoft.com/windows/win32/fileio/naming-a-file), alone or followed
// by an extension, including COM and LPT with a superscript digit.
func deviceName(name string) bool {
	base := strings.ToUpper(name)
	if i := strings.IndexByte(base, '.'); i >= 0 {
		base = base[:i]
	}
	base = strings.TrimRight(base, " ")
	switch base {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	for _, p := range []string{"COM", "LPT"} {
		if rest, ok := strings.CutPrefix(base, p); ok {
			switch rest {
			case "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "¹", "²", "³":
				return true
			}
		}
	}
	return false
}
