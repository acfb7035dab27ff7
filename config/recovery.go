package config

import (
	"fmt"
	"net/netip"
	"time"
)

// ReIP is one re-IP rule of a job: a replica VM failed over into another
// network takes, for every guest address in Source, the same host part in
// Target, with Gateway and DNS.
type ReIP struct {
	Source  string   `yaml:"source"`
	Target  string   `yaml:"target"`
	Gateway string   `yaml:"gateway,omitempty"`
	DNS     []string `yaml:"dns,omitempty"`
}

// FailoverPlan fails several replica VMs over in order, waiting Delay after
// each, and undoes them as a group.
type FailoverPlan struct {
	Name string   `yaml:"name"`
	VMs  []PlanVM `yaml:"vms"`
}

// PlanVM is one VM of a failover plan: its name (or id) in Job, and how long
// to wait after starting it before the next one.
type PlanVM struct {
	VM    string        `yaml:"vm"`
	Job   string        `yaml:"job"`
	Delay time.Duration `yaml:"delay,omitempty"`
}

// MaxPlanDelay bounds the delay after one VM of a failover plan.
const MaxPlanDelay = 24 * time.Hour

// FailoverPlan returns the plan of that name.
func (c *Config) FailoverPlan(name string) (*FailoverPlan, bool) {
	for i := range c.FailoverPlans {
		if c.FailoverPlans[i].Name == name {
			return &c.FailoverPlans[i], true
		}
	}
	return nil, false
}

// recovery checks agent.host, the jobs' networkMapping and reIP, and failoverPlans.
func (ck *checker) recovery(c *Config, jobNames map[string]int) {
	if h := c.Agent.Host; h.Name != "" || h.Provider != "" || h.Path != "" {
		if c.Agent.Name == "" {
			ck.add("agent.host", "set without agent.name: only a target has a host for replica VMs")
		}
		ck.name("agent.host.name", h.Name)
		switch {
		case h.Provider == "":
			ck.add("agent.host.provider", "required: lab or hyperv")
		case h.Provider != "lab" && h.Provider != "hyperv":
			ck.add("agent.host.provider", "unknown provider %q: want lab or hyperv", h.Provider)
		}
		if h.Provider == "lab" && h.Path == "" {
			ck.add("agent.host.path", "required for provider lab: the folder of the replica VMs")
		}
		ck.noNUL("agent.host.path", h.Path)
	}
	for i, j := range c.Jobs {
		p := fmt.Sprintf("jobs[%d]", i)
		for from, to := range j.NetworkMapping {
			if from == "" || to == "" {
				ck.add(p+".networkMapping", "%q: %q: both switch names are needed", from, to)
			}
		}
		for k, r := range j.ReIP {
			rp := fmt.Sprintf("%s.reIP[%d]", p, k)
			src, err1 := netip.ParsePrefix(r.Source)
			dst, err2 := netip.ParsePrefix(r.Target)
			if err1 != nil {
				ck.add(rp+".source", "%q: want a subnet like 10.0.0.0/24", r.Source)
			}
			if err2 != nil {
				ck.add(rp+".target", "%q: want a subnet like 10.9.0.0/24", r.Target)
			}
			if err1 == nil && err2 == nil && (src.Bits() != dst.Bits() || src.Addr().Is4() != dst.Addr().Is4()) {
				ck.add(rp+".target", "%s: want the family and length of source %s", r.Target, r.Source)
			}
			if r.Gateway != "" {
				if _, err := netip.ParseAddr(r.Gateway); err != nil {
					ck.add(rp+".gateway", "%q: not an IP address", r.Gateway)
				}
			}
			for n, d := range r.DNS {
				if _, err := netip.ParseAddr(d); err != nil {
					ck.add(fmt.Sprintf("%s.dns[%d]", rp, n), "%q: not an IP address", d)
				}
			}
		}
	}
	plans := map[string]int{}
	for i, pl := range c.FailoverPlans {
		p := fmt.Sprintf("failoverPlans[%d]", i)
		ck.uniqueName(p+".name", pl.Name, plans, i, "failoverPlans")
		if len(pl.VMs) == 0 {
			ck.add(p+".vms", "empty: list the VMs to fail over, in order")
		}
		for k, v := range pl.VMs {
			vp := fmt.Sprintf("%s.vms[%d]", p, k)
			ck.nonEmptyEntry(vp+".vm", v.VM)
			switch {
			case v.Job == "":
				ck.add(vp+".job", "required: the job that replicates the VM")
			case !has(jobNames, v.Job):
				ck.add(vp+".job", "no job named %q in jobs", v.Job)
			}
			if v.Delay < 0 || v.Delay > MaxPlanDelay {
				ck.add(vp+".delay", "%s: want 0 to %s", v.Delay, MaxPlanDelay)
			}
		}
	}
}
