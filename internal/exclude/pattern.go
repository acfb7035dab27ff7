package exclude

import (
	"fmt"
	"strings"
	"unicode"
)

// Bounds on Options.Paths.
const (
	maxPatterns          = 1024
	maxPatternComponents = 64
)

// pathPattern is one compiled Options.Paths entry: its components, upper-cased
// as NTFS compares names.
type pathPattern struct {
	id    int // index in Options.Paths
	raw   string
	parts [][]rune
}

// compilePatterns splits guest paths into components. A leading drive letter
// ("C:") is dropped; '\' and '/' separate components; empty and "."
// components are skipped; ".." is refused.
func compilePatterns(paths []string) ([]pathPattern, error) {
	if len(paths) > maxPatterns {
		return nil, fmt.Errorf("exclude paths: %d patterns (at most %d)", len(paths), maxPatterns)
	}
	var out []pathPattern
	for i, p := range paths {
		s := p
		if len(s) >= 2 && s[1] == ':' && ((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')) {
			s = s[2:]
		}
		pp := pathPattern{id: i, raw: p}
		for _, c := range strings.FieldsFunc(s, func(r rune) bool { return r == '/' || r == '\\' }) {
			switch c {
			case ".":
				continue
			case "..":
				return nil, fmt.Errorf("exclude paths[%d] %q: \"..\" is not allowed", i, p)
			}
			pp.parts = append(pp.parts, foldName(c))
		}
		if len(pp.parts) == 0 {
			return nil, fmt.Errorf("exclude paths[%d] %q: names no file", i, p)
		}
		if len(pp.parts) > maxPatternComponents {
			return nil, fmt.Errorf("exclude paths[%d] %q: more than %d components", i, p, maxPatternComponents)
		}
		out = append(out, pp)
	}
	return out, nil
}

// foldName upper-cases a name the way NTFS compares names ($UpCase maps
// simple case; unicode.ToUpper matches it for the names guests use).
func foldName(s string) []rune {
	r := []rune(s)
	for i := range r {
		r[i] = unicode.ToUpper(r[i])
	}
	return r
}

// matchComponent reports whether name (folded) matches pattern (folded),
// where '*' matches any run of characters and '?' exactly one. It runs in
// O(len(pattern)·len(name)) at worst.
func matchComponent(pattern, name []rune) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
