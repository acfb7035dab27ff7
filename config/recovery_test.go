package config

import (
	"testing"
	"time"
)

func TestRecoveryKeysLoad(t *testing.T) {
	clearEnv(t)
	text := withJob(`networkMapping: {LAN: DR-LAN}
reIP: [{source: 10.0.0.0/24, target: 10.9.0.0/24, gateway: 10.9.0.1, dns: [10.9.0.53]}]`) + `
agent: {name: dr01, listen: ":7300", datastore: /srv/replicas, host: {name: dr01, provider: lab, path: /srv/lab-dr}}
failoverPlans:
  - name: tier
    vms: [{vm: db01, job: j1, delay: 30s}, {vm: web01, job: j1}]
`
	cfg := mustLoad(t, text)
	j := cfg.Jobs[0]
	if j.NetworkMapping["LAN"] != "DR-LAN" || len(j.ReIP) != 1 || j.ReIP[0].DNS[0] != "10.9.0.53" {
		t.Fatalf("job %+v", j)
	}
	if cfg.Agent.Host.Name != "dr01" || cfg.Agent.Host.Path != "/srv/lab-dr" {
		t.Fatalf("agent.host %+v", cfg.Agent.Host)
	}
	p, ok := cfg.FailoverPlan("tier")
	if !ok || len(p.VMs) != 2 || p.VMs[0].Delay != 30*time.Second || p.VMs[1].Job != "j1" {
		t.Fatalf("plan %+v", p)
	}
}

func TestBadRecoveryKeys(t *testing.T) {
	clearEnv(t)
	_, err := loadText(t, withJob(`reIP: [{source: 10.0.0.0/24, target: 10.9.0.0/16, gateway: nope}]`)+`
agent: {name: dr01, listen: ":7300", datastore: /srv/replicas, host: {name: dr01, provider: vmware}}
failoverPlans:
  - name: tier
    vms: [{vm: db01, job: nojob, delay: -1s}]
  - name: empty
`)
	assertProblems(t, err,
		"jobs[0].reIP[0].target: 10.9.0.0/16: want the family and length of source 10.0.0.0/24",
		`jobs[0].reIP[0].gateway: "nope": not an IP address`,
		`agent.host.provider: unknown provider "vmware"`,
		`failoverPlans[0].vms[0].job: no job named "nojob"`,
		"failoverPlans[0].vms[0].delay: -1s",
		"failoverPlans[1].vms: empty",
	)
}
