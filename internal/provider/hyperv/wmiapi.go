package hyperv

// The names below let a WMI implementation other than COM's (the WMI-level
// Hyper-V simulator, hvsim) stand under the provider, so that everything
// above the COM calls runs unchanged against it.

// Object is one WMI object as the provider reads it (see object).
type Object = object

// Result is what a WMI method returned (see result).
type Result = result

// WMI is what the provider needs from WMI (see wmiClient).
type WMI = wmiClient

// NewOverWMI returns a provider for the local Hyper-V host behind c. Disk
// paths that c reports are opened as they are.
func NewOverWMI(c WMI, opts Options) *Provider {
	return newProvider(c, "", opts)
}

// ParseEmbeddedInstance reads a CIM-XML embedded instance (DTD 2.0) as WMI
// methods take and return them in string parameters.
func ParseEmbeddedInstance(text string) (Object, error) { return parseEmbeddedInstance(text) }
