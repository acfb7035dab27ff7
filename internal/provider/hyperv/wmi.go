package hyperv

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Namespace is the WMI namespace of the Hyper-V virtualization provider.
const Namespace = `root\virtualization\v2`

// object is one WMI object: its absolute path (__PATH), its class and its
// property values as the scripting API returns them (uint64 as decimal
// strings, other integers as int32, arrays as []any, NULL as nil).
type object struct {
	Path  string         `json:"path"`
	Class string         `json:"class"`
	Props map[string]any `json:"props"`
}

// result is what a WMI method returned: ReturnValue and the out parameters
// that were asked for.
type result struct {
	ReturnValue uint32         `json:"returnValue"`
	Out         map[string]any `json:"out"`
	// warning is set by call when the method's job completed with warnings.
	warning string
}

// wmiClient is what the provider needs from WMI. The Windows implementation
// wraps github.com/microsoft/wmi; tests replay recorded values.
//
// In parameters of Invoke are typed as the method declares them (uint16,
// uint32, uint64, string, a REF as the object's path, an embedded instance as
// the string EmbeddedInstance returned); the implementation converts them to
// what the scripting API accepts.
type wmiClient interface {
	// Query runs a WQL query (SELECT or ASSOCIATORS OF) in Namespace.
	Query(ctx context.Context, wql string) ([]object, error)
	// Get returns the object at path, or an error wrapping errObjectNotFound.
	Get(ctx context.Context, path string) (object, error)
	// Invoke runs method on the object at path and returns ReturnValue and
	// the named out parameters.
	Invoke(ctx context.Context, path, method string, in map[string]any, out []string) (result, error)
	// EmbeddedInstance renders a new instance of class with props set as an
	// embedded-instance string (CIM-XML, DTD 2.0).
	EmbeddedInstance(ctx context.Context, class string, props map[string]any) (string, error)
	// ModifiedInstance renders the existing object at path, with props
	// changed, as an embedded-instance string: what Modify* methods take.
	ModifiedInstance(ctx context.Context, path string, props map[string]any) (string, error)
	// OSVersion returns the host's Windows version (Win32_OperatingSystem.Version).
	OSVersion(ctx context.Context) (string, error)
	Close() error
}

// prop returns a property or nil.
func (o object) prop(name string) any {
	if o.Props == nil {
		return nil
	}
	return o.Props[name]
}

func (o object) str(name string) string { return asString(o.prop(name)) }

func (o object) int(name string) (int64, bool) { return asInt64(o.prop(name)) }

func (o object) strs(name string) []string { return asStrings(o.prop(name)) }

// asString returns v as a string; nil and non-strings give "".
func asString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

// asInt64 converts any integer representation WMI gives (int32, uint16, a
// uint64 as decimal string, a float64 from JSON) to int64.
func asInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case float64:
		if x != math.Trunc(x) || x < math.MinInt64 || x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case string:
		s := strings.TrimSpace(x)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n, true
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil && u <= math.MaxInt64 {
			return int64(u), true
		}
		return 0, false
	default:
		return 0, false
	}
}

// asUint32 reads a uint32 that the scripting API may have delivered as a
// negative int32.
func asUint32(v any) (uint32, bool) {
	if x, ok := v.(int32); ok {
		return uint32(x), true
	}
	n, ok := asInt64(v)
	if !ok || n < math.MinInt32 || n > math.MaxUint32 {
		return 0, false
	}
	return uint32(n), true
}

// asStrings converts an array property to strings; a single string gives one element.
func asStrings(v any) []string {
	switch x := v.(type) {
	case nil:
		return nil
	case []string:
		return x
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			out = append(out, asString(e))
		}
		return out
	case string:
		return []string{x}
	default:
		return nil
	}
}

// asInt64s converts an array of integers (uint64[] arrives as strings).
func asInt64s(v any) ([]int64, error) {
	var elems []any
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		elems = x
	case []int64:
		return x, nil
	case []string:
		for _, s := range x {
			elems = append(elems, s)
		}
	default:
		return nil, fmt.Errorf("not an array of integers: %T", v)
	}
	out := make([]int64, 0, len(elems))
	for i, e := range elems {
		n, ok := asInt64(e)
		if !ok {
			return nil, fmt.Errorf("element %d (%v) is not an integer", i, e)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseCIMDateTime parses the DMTF datetime WMI uses,
// "yyyymmddHHMMSS.mmmmmmsUUU" where sUUU is the offset from UTC in minutes.
func parseCIMDateTime(s string) (time.Time, error) {
	if len(s) != 25 || s[14] != '.' || (s[21] != '+' && s[21] != '-') {
		return time.Time{}, fmt.Errorf("parse CIM datetime %q: want yyyymmddHHMMSS.mmmmmm+UUU", s)
	}
	t, err := time.Parse("20060102150405", s[:14])
	if err != nil {
		return time.Time{}, fmt.Errorf("parse CIM datetime %q: %w", s, err)
	}
	micros, err := strconv.Atoi(s[15:21])
	if err != nil {
		return time.Time{}, fmt.Errorf("parse CIM datetime %q: microseconds: %w", s, err)
	}
	offset, err := strconv.Atoi(s[22:25])
	if err != nil {
		return time.Time{}, fmt.Errorf("parse CIM datetime %q: offset: %w", s, err)
	}
	if s[21] == '-' {
		offset = -offset
	}
	t = t.Add(time.Duration(micros) * time.Microsecond).Add(-time.Duration(offset) * time.Minute)
	return t.UTC(), nil
}
