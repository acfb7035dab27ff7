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
