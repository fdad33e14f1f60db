package pattern

import (
	"fmt"
	"strings"
	"time"

	"github.com/portcullis/portcullis/xds/model"
)

// TimeWindow is a when.time condition: days of the week and a range of clock times in a time
// zone. A window whose end is before its start wraps past midnight and belongs to the day it
// starts on.
type TimeWindow struct {
	loc        *time.Location
	days       [7]bool
	start, end int // minutes after midnight; end may be 1440
	raw        string
}

// ParseTimeWindow compiles a time window (validated by the model, except the time zone, which
// needs the zone database).
func ParseTimeWindow(w *model.TimeWindow) (*TimeWindow, error) {
	c := &TimeWindow{loc: time.UTC}
	if w.TimeZone != "" {
		loc, err := time.LoadLocation(w.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("time zone %q: %w", w.TimeZone, err)
		}
		c.loc = loc
	}
	for i := range c.days {
		c.days[i] = len(w.Days) == 0
	}
	for _, d := range w.Days {
		c.days[model.Weekdays[d]] = true
	}
	var ok bool
	if c.start, ok = model.ParseClock(w.Start); !ok {
		return nil, fmt.Errorf("start %q", w.Start)
	}
	if w.End == "24:00" {
		c.end = 24 * 60
	} else if c.end, ok = model.ParseClock(w.End); !ok {
		return nil, fmt.Errorf("end %q", w.End)
	}
	days := "every day"
	if len(w.Days) > 0 {
		days = strings.Join(w.Days, ",")
	}
	c.raw = fmt.Sprintf("%s-%s %s %s", w.Start, w.End, days, c.loc)
	return c, nil
}

// Match reports whether t is inside the window; the zero time (unknown) never is.
func (c *TimeWindow) Match(t time.Time) bool {
	if t.IsZero() {
		return false
	}
	t = t.In(c.loc)
	m := t.Hour()*60 + t.Minute()
	wd := t.Weekday()
	if c.start < c.end {
		return c.days[wd] && m >= c.start && m < c.end
	}
	return (c.days[wd] && m >= c.start) || (c.days[(wd+6)%7] && m < c.end)
}

// Location is the window's time zone.
func (c *TimeWindow) Location() *time.Location { return c.loc }

// String describes the window: "09:00-17:00 Mon,Tue UTC".
func (c *TimeWindow) String() string { return c.raw }

var _ fmt.Stringer = (*TimeWindow)(nil)
