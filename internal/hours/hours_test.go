package hours

import (
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, text string, loc *time.Location) Schedule {
	t.Helper()
	s, err := Parse(text, loc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNightsAndWeekends(t *testing.T) {
	s := mustParse(t, "Mon-Fri 20:00-06:00, Sat-Sun 00:00-24:00", time.UTC)
	at := func(s string) time.Time {
		v, err := time.Parse("2006-01-02 15:04", s)
		if err != nil {
			panic(err)
		}
		return v
	}
	// 2026-12-03 is a Thursday.
	cases := []struct {
		now         string
		open        bool
		end, opens  string
		description string
	}{
		{"2026-12-03 07:55", false, "", "2026-12-03 20:00", "a weekday morning waits for the evening"},
		{"2026-12-03 17:00", false, "", "2026-12-03 20:00", "the afternoon is outside"},
		{"2026-12-03 20:00", true, "2026-12-04 06:00", "", "the night runs into the next morning"},
		{"2026-12-04 03:00", true, "2026-12-04 06:00", "", "after midnight, by Thursday's rule"},
		{"2026-12-04 21:00", true, "2026-12-07 00:00", "", "Friday night joins the weekend (Sunday night is no rule's)"},
		{"2026-12-06 12:00", true, "2026-12-07 00:00", "", "Sunday"},
		{"2026-12-07 03:00", false, "", "2026-12-07 20:00", "Monday's early hours follow no evening"},
		{"2026-12-08 06:00", false, "", "2026-12-08 20:00", "the end is exclusive"},
	}
	for _, c := range cases {
		open, end, opens := s.At(at(c.now))
		if open != c.open {
			t.Errorf("%s (%s): open %v", c.now, c.description, open)
		}
		if c.end != "" && !end.Equal(at(c.end)) {
			t.Errorf("%s (%s): ends %v, want %s", c.now, c.description, end, c.end)
		}
		if c.opens != "" && !opens.Equal(at(c.opens)) {
			t.Errorf("%s (%s): opens %v, want %s", c.now, c.description, opens, c.opens)
		}
	}
}

func TestTimezoneAndDaylightSaving(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	s := mustParse(t, "Sat 22:00-04:00", paris)
	// 2026-03-28 is the Saturday before the spring change (02:00 → 03:00 on Sunday).
	start := time.Date(2026, 3, 28, 22, 30, 0, 0, paris)
	open, end, _ := s.At(start)
	if !open || !end.Equal(time.Date(2026, 3, 29, 4, 0, 0, 0, paris)) {
		t.Fatalf("open %v end %v", open, end)
	}
	if end.Sub(start) != 4*time.Hour+30*time.Minute {
		t.Fatalf("the night that loses an hour lasts %v", end.Sub(start))
	}
	// In UTC the same moment is 21:30, outside a UTC rule of the same text.
	if mustParse(t, "Sat 22:00-04:00", time.UTC).Contains(start) {
		t.Fatal("the location is ignored")
	}
}

func TestAlwaysOpen(t *testing.T) {
	for _, text := range []string{"", "Mon-Sun 00:00-24:00", "Mon-Fri 00:00-24:00, Sat+Sun 00:00-24:00"} {
		open, end, _ := mustParse(t, text, nil).At(time.Now())
		if !open || !end.IsZero() {
			t.Errorf("%q: open %v end %v; want open without end", text, open, end)
		}
	}
}

func TestBadSchedules(t *testing.T) {
	for text, want := range map[string]string{
		"Mon-Fri":             "want \"DAYS HH:MM-HH:MM\"",
		"Mon-Fry 20:00-06:00": `unknown day "Fry"`,
		"Mon 25:00-06:00":     `time "25:00"`,
		"Mon 24:00-06:00":     `time "24:00"`,
		"Mon 20:00":           "want HH:MM-HH:MM",
		"Mon 20:00-20:00":     "the same",
		"Mon 20:0-21:00":      `time "20:0"`,
		"Mon 20:00-21:00, x":  "rule 2",
	} {
		_, err := Parse(text, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
}
