package provider

import "testing"

func TestMadeByJob(t *testing.T) {
	name := CheckpointName("nightly", "web01")
	if name != "replicator nightly web01" {
		t.Fatalf("CheckpointName = %q", name)
	}
	for _, tc := range []struct {
		name, job string
		want      bool
	}{
		{name, "nightly", true},
		{name, "night", false},
		{name, "nightly2", false},
		{"replicator nightly", "nightly", false},
		{"web01 - Backup - (24.11.2026 - 19:05:01)", "nightly", false},
		{"Replicator nightly web01", "nightly", false},
	} {
		if got := MadeByJob(tc.name, tc.job); got != tc.want {
			t.Errorf("MadeByJob(%q, %q) = %v, want %v", tc.name, tc.job, got, tc.want)
		}
	}
}
