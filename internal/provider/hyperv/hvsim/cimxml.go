package hvsim

import (
	"encoding/xml"
	"fmt"
	"sort"
	"strings"

	"github.com/replicator/replicator/internal/provider/hyperv"
)

// renderInstance writes an instance as CIM-XML (DSP0201, DTD 2.0), the form
// WMI's GetText_(WMI_OBJ_TEXT_CIM_DTD_2_0) gives embedded instances.
func renderInstance(class string, props map[string]any) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<INSTANCE CLASSNAME="%s">`, escape(class))
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		switch v := props[k].(type) {
		case nil:
			fmt.Fprintf(&b, `<PROPERTY NAME="%s" TYPE="string"></PROPERTY>`, escape(k))
		case []any:
			fmt.Fprintf(&b, `<PROPERTY.ARRAY NAME="%s" TYPE="string"><VALUE.ARRAY>`, escape(k))
			for _, e := range v {
				fmt.Fprintf(&b, `<VALUE>%s</VALUE>`, escape(fmt.Sprint(e)))
			}
			b.WriteString(`</VALUE.ARRAY></PROPERTY.ARRAY>`)
		case []string:
			fmt.Fprintf(&b, `<PROPERTY.ARRAY NAME="%s" TYPE="string"><VALUE.ARRAY>`, escape(k))
			for _, e := range v {
				fmt.Fprintf(&b, `<VALUE>%s</VALUE>`, escape(e))
			}
			b.WriteString(`</VALUE.ARRAY></PROPERTY.ARRAY>`)
		default:
			fmt.Fprintf(&b, `<PROPERTY NAME="%s" TYPE="%s"><VALUE>%s</VALUE></PROPERTY>`, escape(k), cimType(v), escape(fmt.Sprint(v)))
		}
	}
	b.WriteString(`</INSTANCE>`)
	return b.String()
}

func cimType(v any) string {
	switch v.(type) {
	case bool:
		return "boolean"
	case uint8:
		return "uint8"
	case uint16:
		return "uint16"
	case uint32:
		return "uint32"
	case uint64:
		return "uint64"
	case int32:
		return "sint32"
	case int64, int:
		return "sint64"
	default:
		return "string"
	}
}

func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// parseInstance reads an embedded instance; scalar values come back as strings.
func parseInstance(text string) (hyperv.Object, error) {
	return hyperv.ParseEmbeddedInstance(text)
}
