package workflows

import (
	"fmt"

	"go.temporal.io/sdk/workflow"

	"github.com/replicator/replicator/internal/contract"
)

// Payload budgets. Temporal warns of a payload over 512 KiB and fails one
// over 2 MiB; a run's continuation carries its result and the VMs of the
// inventory page in hand, so the two together stay under the warning
// whatever the number of VMs of the job.
const (
	// resultBudget bounds the JSON of the VMs a run's result lists: a job
	// of a few hundred VMs fits whole; past it, finished VMs are counted in
	// the result's omitted tally, their detail left in their workflows.
	resultBudget = 256 << 10
)

// inventoryPageVMs is the most VMs one inventory page holds (the page is
// also bounded by contract.InventoryPageBytes). A job of no more VMs reads
// its inventory in one page and runs as it always has. (A variable only so
// that tests can page jobs small enough for the test environment.)
var inventoryPageVMs = 500

// vmResultBytes is about the JSON size of a VM's result: fixed keys and
// figures plus its texts, and as much per disk (an estimate on the high side,
// kept cheap because it runs at every VM's end).
func vmResultBytes(r contract.VMResult) int {
	n := 200 + len(r.Name) + len(r.ID) + len(r.RestorePoint) + len(r.Error) + len(r.Warning)
	for _, d := range r.Disks {
		n += 300 + len(d.ID) + len(d.Error) + len(d.Warning)
	}
	return n
}

// setVM records a VM's outcome (when the run still lists it) and keeps the
// result within its budget.
func (s *runState) setVM(id string, r contract.VMResult) {
	if vm := s.vm(id); vm != nil {
		*vm = r
	}
	s.trim()
}

// trim moves finished VMs out of the result's list into its omitted tally
// until the list fits resultBudget, the successful ones first (in the order
// they are listed), then the failed and partial ones. VMs not finished stay
// listed: progress signals and outcomes still reach them.
func (s *runState) trim() {
	if !s.bounded {
		return
	}
	total := 0
	for _, vm := range s.result.VMs {
		total += vmResultBytes(vm)
	}
	if total <= resultBudget {
		return
	}
	drop := make([]bool, len(s.result.VMs))
	for _, successFirst := range []bool{true, false} {
		for i, vm := range s.result.VMs {
			if total <= resultBudget {
				break
			}
			if drop[i] || !isFinal(vm.Status) || (vm.Status == contract.StatusSuccess) != successFirst {
				continue
			}
			drop[i] = true
			total -= vmResultBytes(vm)
		}
	}
	kept := make([]contract.VMResult, 0, len(s.result.VMs))
	for i, vm := range s.result.VMs {
		if drop[i] {
			s.omit(vm)
		} else {
			kept = append(kept, vm)
		}
	}
	s.result.VMs = kept
}

// tally is the result's omitted tally, made when first needed.
func (s *runState) tally() *contract.VMTally {
	if s.result.Omitted == nil {
		s.result.Omitted = &contract.VMTally{}
	}
	return s.result.Omitted
}

// omit counts a finished VM in the omitted tally.
func (s *runState) omit(vm contract.VMResult) {
	t := s.tally()
	switch vm.Status {
	case contract.StatusSuccess:
		t.Success++
	case contract.StatusFailed:
		t.Failed++
	default:
		t.Partial++
	}
	if vm.RPOExceeded {
		t.RPOExceeded++
	}
	for _, d := range vm.Disks {
		t.BytesRead += d.BytesRead
		t.BytesSent += d.BytesSent
		t.BytesWritten += d.BytesWritten
		t.Size += d.Size
	}
	s.result.VMsOmitted++
}

// unread counts VMs of a paged inventory not read yet.
func (s *runState) unread(n int) {
	if n <= 0 {
		return
	}
	t := s.tally()
	t.Pending += n
	t.Unread += n
	s.result.VMsOmitted += n
}

// read takes n VMs off the unread count as their page is read: they are
// listed from now on.
func (s *runState) read(n int) {
	t := s.result.Omitted
	if t == nil {
		return
	}
	n = min(n, t.Unread)
	t.Pending -= n
	t.Unread -= n
	s.result.VMsOmitted -= n
}

// leaveUnread makes the VMs of pages never read partial: the window closed
// or the run was cancelled before their turn; the next run takes them.
func (s *runState) leaveUnread() {
	if t := s.result.Omitted; t != nil {
		t.Partial += t.Pending
		t.Pending = 0
	}
}

// overall is the run's status over the VMs listed and those omitted.
func (s *runState) overall() string {
	vms := s.result.VMs
	t := s.result.Omitted
	if t == nil {
		return overall(vms)
	}
	n, ok, failed := len(vms)+t.Success+t.Partial+t.Failed+t.Pending, t.Success, t.Failed
	for _, vm := range vms {
		switch vm.Status {
		case contract.StatusSuccess:
			ok++
		case contract.StatusFailed:
			failed++
		}
	}
	switch {
	case n == 0 || failed == n:
		return contract.StatusFailed
	case ok == n:
		return contract.StatusSuccess
	default:
		return contract.StatusPartial
	}
}

// rpoExceeded counts the run's VMs past their rpo.
func (s *runState) rpoExceeded() int {
	n := 0
	if s.result.Omitted != nil {
		n = s.result.Omitted.RPOExceeded
	}
	for _, vm := range s.result.VMs {
		if vm.RPOExceeded {
			n++
		}
	}
	return n
}

// inventoryPages reads a paged inventory, one page at a time, after the
// last VM read (the host pages in VM id order).
type inventoryPages struct {
	host, target, job string
	patterns          []string
	cursor            string
	more              bool
	// open lists the VMs with an interrupted restore point (read once per
	// run): within a page they go first.
	open []string
	read bool
}

// next reads the next page: its VMs the host cannot replicate fail, the
// others are listed pending and returned, those with an interrupted restore
// point first.
func (p *inventoryPages) next(ctx workflow.Context, spec contract.JobSpec, st *runState) ([]contract.VM, error) {
	if !p.read {
		p.read = true
		if err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, shortActivity(contract.TargetQueue(p.target))),
			contract.ActOpenSessions, p.job).Get(ctx, &p.open); err != nil {
			workflow.GetLogger(ctx).Warn("listing interrupted restore points failed; continuing in inventory order", "error", err)
		}
	}
	page, err := readPage(ctx, p.host, p.job, p.patterns, p.cursor)
	if err != nil {
		return nil, err
	}
	p.more = page.More
	if n := len(page.VMs); n > 0 {
		p.cursor = page.VMs[n-1].ID
	}
	st.read(len(page.VMs))
	if !p.more && st.result.Omitted != nil {
		// The host has fewer VMs than it counted at the start: none is unread.
		st.read(st.result.Omitted.Unread)
	}
	vms := refuseUnsupported(spec, page.VMs, st, func(string, error, string) {})
	vms = resumeFirst(vms, p.open)
	listPending(st, vms)
	st.trim()
	return vms, nil
}

// readPage reads the page of the host's inventory after the VM id after:
// the VMs of job that patterns pick.
func readPage(ctx workflow.Context, host, job string, patterns []string, after string) (contract.InventoryPage, error) {
	var page contract.InventoryPage
	err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, shortActivity(contract.SourceQueue(host))),
		contract.ActInventoryPage, contract.InventoryInput{Host: host, Job: job, Patterns: patterns, After: after, Limit: inventoryPageVMs}).Get(ctx, &page)
	if err != nil {
		return page, fmt.Errorf("inventory of %s: %w", host, err)
	}
	return page, nil
}

// listPending lists VMs in the result as pending, each disk with its size.
func listPending(st *runState, vms []contract.VM) {
	for _, vm := range vms {
		r := contract.VMResult{Name: vm.Name, ID: vm.ID, Status: contract.StatusPending, Disks: []contract.DiskResult{}}
		for _, d := range vm.Disks {
			r.Disks = append(r.Disks, contract.DiskResult{ID: d.ID, Status: contract.StatusPending, Size: d.VirtualSize})
		}
		st.result.VMs = append(st.result.VMs, r)
	}
}
