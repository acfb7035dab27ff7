package config

import "testing"

// In a list of merged mappings the earlier ones win, as the YAML merge key
// type says (yaml.org/type/merge.html); the mapping's own keys win over all.
func TestMergeListEarlierWins(t *testing.T) {
	clearEnv(t)
	cfg := mustLoad(t, header+`
jobs:
  - &fast {name: f, source: hv01, target: dr01, compression: fast, retention: 3}
  - &high {name: h, source: hv01, target: dr01, compression: high, retention: 9, parallelism: 2}
  - <<: [*fast, *high]
    name: a
    retention: 5
`)
	j := cfg.Jobs[2]
	if j.Compression != "fast" || j.Parallelism != 2 || j.Retention != 5 {
		t.Fatalf("job = compression %q parallelism %d retention %d, want fast, 2, 5", j.Compression, j.Parallelism, j.Retention)
	}
}

// A merge key takes an alias to a list of mappings as it takes the list.
func TestMergeAliasToList(t *testing.T) {
	clearEnv(t)
	cfg := mustLoad(t, `
temporal: {address: "temporal.example:7233"}
hosts: &hosts
  - {name: hv01, provider: lab, path: /srv/lab, username: u1}
  - {name: hv02, provider: hyperv, path: ".", passwordFile: /p2, username: u2}
targets: [{name: dr01, address: "dr01.example:7300"}]
agent:
  name: dr01
  listen: ":7300"
  datastore: /srv/replicas
  host: {<<: *hosts, name: drhost}
`)
	h := cfg.Agent.Host
	if h.Name != "drhost" || h.Provider != "lab" || h.Path != "/srv/lab" || h.Username != "u1" || h.PasswordFile != "/p2" {
		t.Fatalf("agent.host = %+v, want hv01's keys over hv02's, and its own name", h)
	}
}
