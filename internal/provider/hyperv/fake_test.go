package hyperv

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func loadRecording(t *testing.T) Recording {
	t.Helper()
	b, err := os.ReadFile("testdata/hv01.json")
	if err != nil {
		t.Fatal(err)
	}
	var r Recording
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("testdata/hv01.json: %v", err)
	}
	return r
}

// invocation is one recorded method call.
type invocation struct {
	Path   string
	Method string
	In     map[string]any
	Out    []string
}

// fakeWMI replays a recording. Method calls other than
// GetVirtualHardDiskSettingData go to methods[name], which the test sets.
type fakeWMI struct {
	t       *testing.T
	mu      sync.Mutex
	rec     Recording
	fail    map[string]error // query or path → error
	methods map[string]func(invocation) (result, error)
	jobs    map[string][]object // job path → states returned by successive Gets
	ops     []string            // every call, in order
	calls   []invocation
	embeds  []map[string]any
}

func newFake(t *testing.T) *fakeWMI {
	f := &fakeWMI{t: t, rec: loadRecording(t), fail: map[string]error{}, methods: map[string]func(invocation) (result, error){}, jobs: map[string][]object{}}
	// ModifySystemSettings applies the properties ModifiedInstance rendered.
	f.methods["ModifySystemSettings"] = func(inv invocation) (result, error) {
		var m struct {
			Path  string         `json:"path"`
			Props map[string]any `json:"props"`
		}
		if err := json.Unmarshal([]byte(asString(inv.In["SystemSettings"])), &m); err != nil {
			return result{ReturnValue: rcInvalidParameter}, nil
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		o, ok := f.rec.Objects[m.Path]
		if !ok {
			return result{ReturnValue: rcInvalidParameter}, nil
		}
		props := map[string]any{}
		for k, v := range o.Props {
			props[k] = v
		}
		for k, v := range m.Props {
			props[k] = v
		}
		o.Props = props
		f.rec.Objects[m.Path] = o
		return result{ReturnValue: rcCompleted}, nil
	}
	return f
}

func (f *fakeWMI) Query(ctx context.Context, wql string) ([]object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, "query "+wql)
	if err := f.fail[wql]; err != nil {
		return nil, err
	}
	objs, ok := f.rec.Queries[wql]
	if !ok {
		if strings.HasPrefix(wql, "SELECT * FROM Msvm_VirtualSystemSettingData WHERE InstanceID") ||
			strings.HasSuffix(wql, "WHERE ResultClass = Msvm_ResourceAllocationSettingData") ||
			strings.HasPrefix(wql, "SELECT * FROM Msvm_VirtualSystemReferencePoint WHERE InstanceID") ||
			strings.HasPrefix(wql, "SELECT * FROM Msvm_ComputerSystem WHERE Name") {
			return nil, nil // nothing matches: WMI answers with no instance
		}
		f.t.Errorf("unrecorded query %q", wql)
		return nil, fmt.Errorf("unrecorded query %q", wql)
	}
	return objs, nil
}

func (f *fakeWMI) Get(ctx context.Context, path string) (object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, "get "+path)
	if err := f.fail[path]; err != nil {
		return object{}, err
	}
	if states, ok := f.jobs[path]; ok {
		if len(states) == 0 {
			f.t.Errorf("job %s polled after its last recorded state", path)
			return object{}, fmt.Errorf("no more states")
		}
		s := states[0]
		if len(states) > 1 {
			f.jobs[path] = states[1:]
		}
		return s, nil
	}
	o, ok := f.rec.Objects[path]
	if !ok {
		return object{}, classifyHRESULT("get "+path, hrWbemNotFound, fmt.Errorf("not found"))
	}
	return o, nil
}

func (f *fakeWMI) Invoke(ctx context.Context, path, method string, in map[string]any, out []string) (result, error) {
	f.mu.Lock()
	inv := invocation{Path: path, Method: method, In: in, Out: out}
	f.ops = append(f.ops, "invoke "+method)
	f.calls = append(f.calls, inv)
	h := f.methods[method]
	f.mu.Unlock()
	if method == "GetVirtualHardDiskSettingData" && h == nil {
		sd, ok := f.rec.VHDSettings[asString(in["Path"])]
		if !ok {
			return result{ReturnValue: rcFileNotFound}, nil
		}
		return result{ReturnValue: 0, Out: map[string]any{"SettingData": sd, "Job": nil}}, nil
	}
	if h == nil {
		f.t.Errorf("unexpected call of %s on %s", method, path)
		return result{}, fmt.Errorf("unexpected call of %s", method)
	}
	return h(inv)
}

func (f *fakeWMI) EmbeddedInstance(ctx context.Context, class string, props map[string]any) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.embeds = append(f.embeds, props)
	b, err := json.Marshal(map[string]any{"class": class, "props": props})
	return string(b), err
}

func (f *fakeWMI) ModifiedInstance(ctx context.Context, path string, props map[string]any) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.embeds = append(f.embeds, props)
	b, err := json.Marshal(map[string]any{"path": path, "props": props})
	return string(b), err
}

func (f *fakeWMI) OSVersion(ctx context.Context) (string, error) { return f.rec.OSVersion, nil }
func (f *fakeWMI) Close() error                                  { return nil }

// callsOf returns the recorded calls of one method.
func (f *fakeWMI) callsOf(method string) []invocation {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []invocation
	for _, c := range f.calls {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// invokeOrder lists the invoked methods in order, leaving out the read-only
// GetVirtualHardDiskSettingData.
func (f *fakeWMI) invokeOrder() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if c.Method != "GetVirtualHardDiskSettingData" {
			out = append(out, c.Method)
		}
	}
	return out
}

// fakeClock advances only when the provider sleeps.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept []time.Duration
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slept = append(c.slept, d)
	c.t = c.t.Add(d)
	return nil
}

// testProvider builds a provider over the fake with a fake clock and a
// logger writing into logs.
func testProvider(f *fakeWMI, remote string, logs *strings.Builder) (*Provider, *fakeClock) {
	var lg *slog.Logger
	if logs != nil {
		lg = slog.New(slog.NewTextHandler(logs, nil))
	} else {
		lg = slog.New(slog.DiscardHandler)
	}
	p := newProvider(f, remote, Options{JobTimeout: time.Minute, PollInterval: time.Second, MaxPollInterval: 8 * time.Second, Logger: lg})
	clk := &fakeClock{t: time.Date(2026, 11, 24, 19, 5, 0, 0, time.UTC)}
	p.now, p.sleep = clk.now, clk.sleep
	return p, clk
}

func jobPath(id string) string {
	return `\\HV01\root\virtualization\v2:Msvm_ConcreteJob.InstanceID="` + id + `"`
}

func jobObject(id string, state, pct, code int, desc string) object {
	return object{Path: jobPath(id), Class: "Msvm_ConcreteJob", Props: map[string]any{
		"InstanceID": id, "JobState": float64(state), "PercentComplete": float64(pct),
		"ErrorCode": float64(code), "ErrorDescription": desc, "JobType": float64(70),
	}}
}
