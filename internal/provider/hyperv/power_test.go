package hyperv

import (
	"context"
	"strings"
	"testing"
	"time"
)

// setEnabledState changes the recorded EnabledState of web01.
func setEnabledState(f *fakeWMI, state float64) {
	q := "SELECT * FROM Msvm_ComputerSystem WHERE Name = '" + f.rec.IDs["web01"] + "'"
	objs := f.rec.Queries[q]
	out := make([]object, len(objs))
	for i, o := range objs {
		o.Props = copyProps(o.Props)
		o.Props["EnabledState"] = state
		out[i] = o
	}
	f.rec.Queries[q] = out
}

func TestStopVMShutsTheGuestDownAndWaits(t *testing.T) {
	f := newFake(t)
	id := f.rec.IDs["web01"]
	setEnabledState(f, enabledStateEnabled)
	comp := `\\HV01\root\virtualization\v2:Msvm_ShutdownComponent.CreationClassName="Msvm_ShutdownComponent",DeviceID="x",SystemName="` + id + `"`
	f.rec.Queries["SELECT * FROM Msvm_ShutdownComponent WHERE SystemName = '"+id+"'"] = []object{{Path: comp}}
	polls := 0
	f.methods["InitiateShutdown"] = func(inv invocation) (result, error) {
		if inv.Path != comp || inv.In["Force"] != false {
			t.Errorf("InitiateShutdown %+v: want the VM's component, not forced", inv)
		}
		return result{ReturnValue: 0}, nil
	}
	p, clk := testProvider(f, "", nil)
	// The guest takes three polls to go off.
	p.sleep = func(ctx context.Context, d time.Duration) error {
		polls++
		if polls == 3 {
			f.mu.Lock()
			setEnabledState(f, enabledStateDisabled)
			f.mu.Unlock()
		}
		return clk.sleep(ctx, d)
	}
	if err := p.StopVM(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if polls != 3 || len(f.callsOf("InitiateShutdown")) != 1 {
		t.Fatalf("polls %d, shutdown calls %d", polls, len(f.callsOf("InitiateShutdown")))
	}
	// Off already: nothing is asked of the guest.
	if err := p.StopVM(context.Background(), id); err != nil || len(f.callsOf("InitiateShutdown")) != 1 {
		t.Fatalf("stop of an off VM: %v", err)
	}
}

func TestStopVMWithoutShutdownServiceIsRefused(t *testing.T) {
	f := newFake(t)
	id := f.rec.IDs["web01"]
	setEnabledState(f, enabledStateEnabled)
	f.rec.Queries["SELECT * FROM Msvm_ShutdownComponent WHERE SystemName = '"+id+"'"] = nil
	p, _ := testProvider(f, "", nil)
	if err := p.StopVM(context.Background(), id); err == nil || !strings.Contains(err.Error(), "shutdown integration service") {
		t.Fatalf("err = %v", err)
	}
	if len(f.callsOf("RequestStateChange")) != 0 {
		t.Fatal("the VM was turned off hard")
	}
}

func TestStartVM(t *testing.T) {
	f := newFake(t)
	id := f.rec.IDs["web01"]
	setEnabledState(f, enabledStateDisabled)
	f.methods["RequestStateChange"] = func(inv invocation) (result, error) {
		if inv.In["RequestedState"] != requestedStateEnabled {
			t.Errorf("RequestStateChange %+v", inv.In)
		}
		return result{ReturnValue: 0}, nil
	}
	p, _ := testProvider(f, "", nil)
	if err := p.StartVM(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if n := len(f.callsOf("RequestStateChange")); n != 1 {
		t.Fatalf("%d RequestStateChange calls", n)
	}
}
