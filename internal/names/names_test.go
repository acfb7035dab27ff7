package names

import (
	"strings"
	"testing"
)

// Names in use: job and host names of the configuration and the demo, Hyper-V
// VM ids (GUIDs), lab disk ids, restore point ids, replica files, and VM
// names as Hyper-V allows them (spaces, any letter).
var accepted = []string{
	"demo", "hv01", "dr01", "web-01", "a.b_c", "X", "..a", strings.Repeat("n", MaxLen),
	"6B29FC40-CA47-1067-B31D-00DD010662DA", "disk0", "disk0.vhdx", "20261203T150405Z-0001.vhdx",
	"web01_replica", "Web Server 2019", "Ω", "Сервер-1", "COM10", "console", "LPT", "nul-device",
}

func TestCheckAccepts(t *testing.T) {
	for _, n := range accepted {
		if err := Check("vm", n); err != nil {
			t.Errorf("Check(%q) = %v, want nil", n, err)
		}
	}
}

func TestCheckRefuses(t *testing.T) {
	for name, want := range map[string]string{
		"":                      "is empty",
		".":                     "is not a file name",
		"..":                    "is not a file name",
		"a/b":                   "path separator",
		`a\b`:                   "path separator",
		"/etc":                  "path separator",
		"../x":                  "path separator",
		"a\x00b":                "NUL",
		"a\nb":                  "control character (U+000A)",
		"a\x7fb":                "control character (U+007F)",
		"a\u0085b":              "control character (U+0085)",
		"C:":                    `contains ':'`,
		"a*b":                   `contains '*'`,
		`a"b`:                   `contains '"'`,
		"a|b":                   `contains '|'`,
		"x.":                    "ends with a dot or a space",
		"x ":                    "ends with a dot or a space",
		"con":                   "device name",
		"NUL.txt":               "device name",
		"LPT1":                  "device name",
		"com0.tar.gz":           "device name",
		"COM²":                  "device name",
		"CONOUT$":               "device name",
		"aux .txt":              "device name",
		"\xff\xfe":              "not valid UTF-8",
		strings.Repeat("x", 65): "is 65 characters long: at most 64",
		strings.Repeat("Ω", 33): "is 66 bytes long in UTF-8: at most 64",
	} {
		err := Check("vm", name)
		if err == nil {
			t.Errorf("Check(%q) = nil, want %q", name, want)
			continue
		}
		if !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "vm name ") {
			t.Errorf("Check(%q) = %q, want it to say %q", name, err, want)
		}
	}
}

func TestPlain(t *testing.T) {
	for _, n := range []string{"demo", "web-01", "a.b_c", "..a", strings.Repeat("j", MaxLen)} {
		if err := Plain("", n); err != nil {
			t.Errorf("Plain(%q) = %v", n, err)
		}
	}
	for name, want := range map[string]string{
		"a b":                   `name "a b" contains ' ': use only letters, digits, '.', '_' and '-'`,
		"é":                     `contains 'é'`,
		"a:b":                   `contains ':'`,
		"/abs":                  `name "/abs" contains a path separator`,
		"a\x00b":                "NUL",
		"..":                    `name ".." is not a file name`,
		"con":                   "device name",
		strings.Repeat("j", 65): `is 65 characters long: at most 64`,
	} {
		if err := Plain("", name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Plain(%q) = %v, want it to say %q", name, err, want)
		}
	}
}

// Every name Plain accepts, Check accepts: the configuration never admits a
// job or host the agent or the datastore would refuse.
func FuzzPlainWithinCheck(f *testing.F) {
	for _, n := range accepted {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if Plain("", name) == nil && Check("", name) != nil {
			t.Errorf("%q: Plain accepts, Check refuses", name)
		}
		if Check("", name) == nil && (strings.ContainsAny(name, "/\\\x00") || name == "." || name == ".." || len(name) > MaxLen) {
			t.Errorf("%q: Check accepts a name that is not one path element", name)
		}
	})
}
