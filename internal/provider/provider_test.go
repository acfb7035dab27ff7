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

func TestJoinWarnings(t *testing.T) {
	for _, c := range [][3]string{{"", "", ""}, {"a", "", "a"}, {"", "b", "b"}, {"a", "b", "a; b"}} {
		if got := JoinWarnings(c[0], c[1]); got != c[2] {
			t.Errorf("JoinWarnings(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}
