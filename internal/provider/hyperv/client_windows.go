//go:build windows

package hyperv

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"

	ole "github.com/go-ole/go-ole"
	"github.com/go-ole/go-ole/oleutil"
	cim "github.com/microsoft/wmi/pkg/wmiinstance"
)

// comClient is the wmiClient of Windows. COM objects belong to the thread
// that created them, so every call runs on one goroutine locked to its OS
// thread; callers hand it closures and wait for them or for their context.
type comClient struct {
	calls     chan func()
	closeOnce sync.Once
	closed    chan struct{}

	// Owned by the COM thread.
	locator  *ole.IDispatch
	unknown  *ole.IUnknown
	session  *cim.WmiSession
	cimv2    *cim.WmiSession
	server   string
	user     string
	password string
}

func dialWMI(ctx context.Context, remote, user, password string) (*comClient, error) {
	c := &comClient{calls: make(chan func()), closed: make(chan struct{}), server: remote, user: user, password: password}
	started := make(chan error, 1)
	go c.run(started)
	if err := <-started; err != nil {
		return nil, err
	}
	err := c.do(ctx, "connect", func() error {
		s, err := c.connect(Namespace)
		if err != nil {
			return err
		}
		c.session = s
		return nil
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *comClient) run(started chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := ole.CoInitializeEx(0, ole.COINIT_MULTITHREADED); err != nil {
		var oe *ole.OleError
		if !errors.As(err, &oe) || (oe.Code() != ole.S_OK && oe.Code() != cim.S_FALSE) {
			started <- fmt.Errorf("initialize COM: %w", err)
			return
		}
	}
	defer ole.CoUninitialize()
	if err := cim.CoInitializeSecurity(cim.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, cim.RPC_C_IMP_LEVEL_IMPERSONATE); err != nil {
		var oe *ole.OleError
		if !errors.As(err, &oe) || (oe.Code() != ole.S_OK && oe.Code() != cim.S_FALSE && uint32(oe.Code()) != cim.RPC_E_TOO_LATE) {
			started <- fmt.Errorf("initialize COM security: %w", err)
			return
		}
	}
	unknown, err := oleutil.CreateObject("WbemScripting.SWbemLocator")
	if err != nil {
		started <- comError("create SWbemLocator", err)
		return
	}
	locator, err := unknown.QueryInterface(cim.IID_ISWbemLocator)
	if err != nil {
		unknown.Release()
		started <- comError("create SWbemLocator", err)
		return
	}
	c.unknown, c.locator = unknown, locator
	started <- nil
	for {
		select {
		case f := <-c.calls:
			f()
		case <-c.closed:
			if c.cimv2 != nil {
				c.cimv2.Close()
			}
			if c.session != nil {
				c.session.Close()
			}
			c.locator.Release()
			c.unknown.Release()
			return
		}
	}
}

// do runs f on the COM thread. A panic inside the WMI library becomes an error.
func (c *comClient) do(ctx context.Context, op string, f func() error) error {
	done := make(chan error, 1)
	call := func() {
		defer func() {
			if r := recover(); r != nil {
				done <- &Error{Op: op, Description: fmt.Sprintf("WMI call failed: %v", r), retryable: true}
			}
		}()
		done <- f()
	}
	select {
	case c.calls <- call:
	case <-c.closed:
		return &Error{Op: op, Description: "WMI connection is closed"}
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// The COM call goes on; its result is dropped.
		return ctx.Err()
	}
}

// connect opens a namespace on the server with packet privacy and impersonation.
func (c *comClient) connect(namespace string) (*cim.WmiSession, error) {
	server := c.server
	if server == "" {
		server = "."
	}
	raw, err := oleutil.CallMethod(c.locator, "ConnectServer", server, namespace, c.user, c.password)
	if err != nil {
		return nil, comError(`ConnectServer `+namespace, err)
	}
	sec, err := oleutil.GetProperty(raw.ToIDispatch(), "Security_")
	if err != nil {
		raw.Clear()
		return nil, comError("Security_", err)
	}
	defer sec.Clear()
	if _, err := oleutil.PutProperty(sec.ToIDispatch(), "ImpersonationLevel", int32(3)); err != nil {
		raw.Clear()
		return nil, comError("set impersonation level", err)
	}
	if _, err := oleutil.PutProperty(sec.ToIDispatch(), "AuthenticationLevel", int32(6)); err != nil {
		raw.Clear()
		return nil, comError("set authentication level", err)
	}
	s, err := cim.CreateSession(c.locator, namespace, c.server, "", "", "")
	if err != nil {
		raw.Clear()
		return nil, err
	}
	s.RawSession = raw
	s.Session = raw.ToIDispatch()
	return s, nil
}

// comError classifies a COM error by its HRESULT (or the SCODE of the
// exception it carries).
func comError(op string, err error) error {
	var oe *ole.OleError
	if !errors.As(err, &oe) {
		return fmt.Errorf("%s: %w", op, err)
	}
	code := uint32(oe.Code())
	if ei, ok := oe.SubError().(ole.EXCEPINFO); ok && ei.SCODE() != 0 {
		code = ei.SCODE()
	}
	return classifyHRESULT(op, code, err)
}

func (c *comClient) Query(ctx context.Context, wql string) ([]object, error) {
	var out []object
	err := c.do(ctx, wql, func() error {
		insts, err := c.session.QueryInstances(wql)
		if err != nil {
			return comError(wql, err)
		}
		defer closeAll(insts)
		for _, inst := range insts {
			o, err := toObject(inst)
			if err != nil {
				return comError(wql, err)
			}
			out = append(out, o)
		}
		return nil
	})
	return out, err
}

func (c *comClient) Get(ctx context.Context, path string) (object, error) {
	var out object
	err := c.do(ctx, "get "+path, func() error {
		inst, err := c.session.GetInstance(path)
		if err != nil {
			return comError("get "+path, err)
		}
		defer inst.Close()
		out, err = toObject(inst)
		if err != nil {
			return comError("read "+path, err)
		}
		return nil
	})
	return out, err
}

func (c *comClient) Invoke(ctx context.Context, path, method string, in map[string]any, outNames []string) (result, error) {
	op := method + " on " + path
	var res result
	err := c.do(ctx, op, func() error {
		inst, err := c.session.GetInstance(path)
		if err != nil {
			return comError(op, err)
		}
		defer inst.Close()
		m, err := inst.GetWmiMethod(method)
		if err != nil {
			return comError(op, err)
		}
		var inParams, outParams cim.WmiMethodParamCollection
		for k, v := range in {
			inParams = append(inParams, cim.NewWmiMethodParam(k, automationValue(v)))
		}
		for _, k := range outNames {
			outParams = append(outParams, cim.NewWmiMethodParam(k, nil))
		}
		r, err := m.Execute(inParams, outParams)
		if err != nil {
			return comError(op, err)
		}
		res = result{ReturnValue: uint32(r.ReturnValue), Out: map[string]any{}}
		for k, p := range r.OutMethodParams {
			res.Out[k] = p.Value
		}
		return nil
	})
	return res, err
}

func (c *comClient) EmbeddedInstance(ctx context.Context, class string, props map[string]any) (string, error) {
	var text string
	err := c.do(ctx, "new "+class, func() error {
		cls, err := c.session.GetClass(class)
		if err != nil {
			return comError("get class "+class, err)
		}
		defer cls.Close()
		inst, err := cls.MakeInstance()
		if err != nil {
			return comError("spawn "+class, err)
		}
		defer inst.Close()
		for k, v := range props {
			if err := inst.SetProperty(k, automationValue(v)); err != nil {
				return comError(fmt.Sprintf("set %s.%s", class, k), err)
			}
		}
		text, err = inst.EmbeddedXMLInstance()
		if err != nil {
			return comError("render "+class, err)
		}
		return nil
	})
	return text, err
}

func (c *comClient) ModifiedInstance(ctx context.Context, path string, props map[string]any) (string, error) {
	var text string
	err := c.do(ctx, "modify "+path, func() error {
		inst, err := c.session.GetInstance(path)
		if err != nil {
			return comError("get "+path, err)
		}
		defer inst.Close()
		for k, v := range props {
			if err := inst.SetProperty(k, automationValue(v)); err != nil {
				return comError(fmt.Sprintf("set %s of %s", k, path), err)
			}
		}
		text, err = inst.EmbeddedXMLInstance()
		if err != nil {
			return comError("render "+path, err)
		}
		return nil
	})
	return text, err
}

func (c *comClient) OSVersion(ctx context.Context) (string, error) {
	var version string
	err := c.do(ctx, "Win32_OperatingSystem", func() error {
		if c.cimv2 == nil {
			s, err := c.connect(`root\cimv2`)
			if err != nil {
				return err
			}
			c.cimv2 = s
		}
		insts, err := c.cimv2.QueryInstances("SELECT Version FROM Win32_OperatingSystem")
		if err != nil {
			return comError("query Win32_OperatingSystem", err)
		}
		defer closeAll(insts)
		if len(insts) == 0 {
			return &Error{Op: "query Win32_OperatingSystem", Description: "no instance"}
		}
		v, err := insts[0].GetProperty("Version")
		if err != nil {
			return comError("read Win32_OperatingSystem.Version", err)
		}
		version = asString(v)
		return nil
	})
	return version, err
}

func (c *comClient) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func closeAll(insts []*cim.WmiInstance) {
	for _, i := range insts {
		i.Close()
	}
}

// toObject reads the path and every property of an SWbemObject.
func toObject(inst *cim.WmiInstance) (object, error) {
	o := object{Props: map[string]any{}}
	if p, err := inst.GetSystemProperty("__PATH"); err == nil {
		o.Path = asString(p.Value())
		p.Close()
	}
	if p, err := inst.GetSystemProperty("__CLASS"); err == nil {
		o.Class = asString(p.Value())
		p.Close()
	}
	props, err := oleutil.GetProperty(inst.GetIDispatch(), "Properties_")
	if err != nil {
		return object{}, err
	}
	defer props.Clear()
	err = oleutil.ForEach(props.ToIDispatch(), func(v *ole.VARIANT) error {
		defer v.Clear()
		prop := v.ToIDispatch()
		name, err := oleutil.GetProperty(prop, "Name")
		if err != nil {
			return err
		}
		defer name.Clear()
		val, err := oleutil.GetProperty(prop, "Value")
		if err != nil {
			return err
		}
		defer val.Clear()
		value, err := cim.GetVariantValue(val)
		if err != nil {
			return err
		}
		o.Props[name.ToString()] = value
		return nil
	})
	return o, err
}

// automationValue converts a typed method argument to what the WMI scripting
// API accepts: 8- to 32-bit integers as VT_I4, 64-bit integers as decimal
// strings (the scripting representation of uint64/sint64).
func automationValue(v any) any {
	switch x := v.(type) {
	case uint8:
		return int32(x)
	case uint16:
		return int32(x)
	case uint32:
		return int32(x)
	case int:
		return int32(x)
	case int16:
		return int32(x)
	case uint64:
		return strconv.FormatUint(x, 10)
	case int64:
		return strconv.FormatInt(x, 10)
	default:
		return v
	}
}
