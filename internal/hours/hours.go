// Package hours reads weekly schedules of permitted hours, such as a job's
// backup window "Mon-Fri 20:00-06:00, Sat-Sun 00:00-24:00", and answers
// whether a moment lies inside one and when the current period ends or the
// next begins. Times are wall-clock times in the schedule's location, so a
// window follows daylight saving time as an administrator expects.
package hours

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule is a set of weekly rules; the zero Schedule (no rules) is always open.
type Schedule struct {
	rules []rule
	loc   *time.Location
}

// rule opens from start to end (minutes after midnight) on each of its days;
// an end at or before the start runs into the next day.
type rule struct {
	days       [7]bool // indexed by time.Weekday
	start, end int
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// Parse reads rules separated by commas, each "DAYS HH:MM-HH:MM" where DAYS
// is a day (Mon), a range of days (Mon-Fri, Fri-Mon wraps) or several joined
// with "+" (Mon+Wed); "24:00" ends at midnight. Times are in loc (nil: UTC).
// An empty text is a schedule that is always open.
func Parse(text string, loc *time.Location) (Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	s := Schedule{loc: loc}
	if strings.TrimSpace(text) == "" {
		return s, nil
	}
	for i, part := range strings.Split(text, ",") {
		r, err := parseRule(strings.TrimSpace(part))
		if err != nil {
			return Schedule{}, fmt.Errorf("rule %d %q: %w", i+1, strings.TrimSpace(part), err)
		}
		s.rules = append(s.rules, r)
	}
	return s, nil
}

func parseRule(text string) (rule, error) {
	var r rule
	fields := strings.Fields(text)
	if len(fields) != 2 {
		return r, fmt.Errorf(`want "DAYS HH:MM-HH:MM", e.g. "Mon-Fri 20:00-06:00"`)
	}
	for _, group := range strings.Split(fields[0], "+") {
		from, to, isRange := strings.Cut(group, "-")
		a, ok := dayNames[strings.ToLower(from)]
		if !ok {
			return r, fmt.Errorf("unknown day %q: want Mon, Tue, Wed, Thu, Fri, Sat or Sun", from)
		}
		b := a
		if isRange {
			if b, ok = dayNames[strings.ToLower(to)]; !ok {
				return r, fmt.Errorf("unknown day %q: want Mon, Tue, Wed, Thu, Fri, Sat or Sun", to)
			}
		}
		for d := a; ; d = (d + 1) % 7 {
			r.days[d] = true
			if d == b {
				break
			}
		}
	}
	from, to, ok := strings.Cut(fields[1], "-")
	if !ok {
		return r, fmt.Errorf("hours %q: want HH:MM-HH:MM", fields[1])
	}
	var err error
	if r.start, err = clock(from, false); err != nil {
		return r, err
	}
	if r.end, err = clock(to, true); err != nil {
		return r, err
	}
	if r.start == r.end {
		return r, fmt.Errorf("hours %q: start and end are the same; use 00:00-24:00 for a whole day", fields[1])
	}
	return r, nil
}

// clock reads HH:MM as minutes after midnight; 24:00 only as an end.
func clock(text string, isEnd bool) (int, error) {
	h, m, ok := strings.Cut(text, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(m) != 2 || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && (mm != 0 || !isEnd)) {
		return 0, fmt.Errorf("time %q: want HH:MM from 00:00 to 23:59 (24:00 as an end)", text)
	}
	return hh*60 + mm, nil
}

// Always says whether the schedule has no rules (always open).
func (s Schedule) Always() bool { return len(s.rules) == 0 }

// Location is where the schedule's times are.
func (s Schedule) Location() *time.Location {
	if s.loc == nil {
		return time.UTC
	}
	return s.loc
}

type period struct{ from, to time.Time }

// periods lists the open periods that start from a day before t to eight
// days after it, in order, adjacent and overlapping ones joined.
func (s Schedule) periods(t time.Time) []period {
	loc := s.Location()
	lt := t.In(loc)
	var out []period
	for day := -1; day <= 8; day++ {
		midnight := time.Date(lt.Year(), lt.Month(), lt.Day()+day, 0, 0, 0, 0, loc)
		for _, r := range s.rules {
			if !r.days[midnight.Weekday()] {
				continue
			}
			from := wall(midnight, r.start)
			endDay := midnight
			if r.end <= r.start {
				endDay = time.Date(midnight.Year(), midnight.Month(), midnight.Day()+1, 0, 0, 0, 0, loc)
			}
			out = append(out, period{from, wall(endDay, r.end)})
		}
	}
	// Join: sort by start, merge touching periods.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].from.Before(out[j-1].from); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	var joined []period
	for _, p := range out {
		if n := len(joined); n > 0 && !p.from.After(joined[n-1].to) {
			if p.to.After(joined[n-1].to) {
				joined[n-1].to = p.to
			}
			continue
		}
		joined = append(joined, p)
	}
	return joined
}

// wall is minutes after a midnight in its location, by the wall clock (a
// day of 23 or 25 hours keeps 20:00 at 20:00).
func wall(midnight time.Time, minutes int) time.Time {
	return time.Date(midnight.Year(), midnight.Month(), midnight.Day(), minutes/60, minutes%60, 0, 0, midnight.Location())
}

// At says whether t is inside the schedule; if it is, end is when the open
// period ends (zero: never, for an empty schedule or one open all week); if
// not, opens is when the next period begins (zero: never).
func (s Schedule) At(t time.Time) (open bool, end, opens time.Time) {
	if s.Always() {
		return true, time.Time{}, time.Time{}
	}
	ps := s.periods(t)
	for _, p := range ps {
		if !t.Before(p.from) && t.Before(p.to) {
			if p.to.Sub(p.from) >= 8*24*time.Hour {
				return true, time.Time{}, time.Time{} // open all week
			}
			return true, p.to, time.Time{}
		}
		if p.from.After(t) {
			return false, time.Time{}, p.from
		}
	}
	return false, time.Time{}, time.Time{}
}

// Contains says whether t is inside the schedule.
func (s Schedule) Contains(t time.Time) bool {
	open, _, _ := s.At(t)
	return open
}
