package hyperv

import (
	"encoding/xml"
	"fmt"
)

// cimInstance is the CIM-XML form of an embedded instance, as WMI methods
// return it in string parameters (for example the SettingData of
// GetVirtualHardDiskSettingData).
type cimInstance struct {
	XMLName    xml.Name `xml:"INSTANCE"`
	ClassName  string   `xml:"CLASSNAME,attr"`
	Properties []struct {
		Name  string  `xml:"NAME,attr"`
		Value *string `xml:"VALUE"`
	} `xml:"PROPERTY"`
	Arrays []struct {
		Name   string    `xml:"NAME,attr"`
		Values *[]string `xml:"VALUE.ARRAY>VALUE"`
	} `xml:"PROPERTY.ARRAY"`
}

// parseEmbeddedInstance turns a CIM-XML embedded instance into an object whose
// scalar properties are strings (as the XML carries them) and whose arrays
// are []any of strings. Properties without a VALUE are nil.
func parseEmbeddedInstance(text string) (object, error) {
	var inst cimInstance
	if err := xml.Unmarshal([]byte(text), &inst); err != nil {
		return object{}, fmt.Errorf("parse embedded instance: %w", err)
	}
	o := object{Class: inst.ClassName, Props: map[string]any{}}
	for _, p := range inst.Properties {
		if p.Value == nil {
			o.Props[p.Name] = nil
			continue
		}
		o.Props[p.Name] = *p.Value
	}
	for _, a := range inst.Arrays {
		if a.Values == nil {
			o.Props[a.Name] = nil
			continue
		}
		vals := make([]any, len(*a.Values))
		for i, v := range *a.Values {
			vals[i] = v
		}
		o.Props[a.Name] = vals
	}
	return o, nil
}
