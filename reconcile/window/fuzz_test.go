package window

import (
	"testing"
	"time"
)

var fuzzZones = []string{"", "UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo", "Pacific/Chatham", "Not/AZone"}

// FuzzSet_At: Compile never panics, and for every set it accepts, At never
// panics and its Until is the first flip: after t, within Horizon, At just
// before Until agrees with At(t), and At(Until) differs.
func FuzzSet_At(f *testing.F) {
	f.Add("0 18 * * 5", int64(62*time.Hour), uint8(2), true, "0 9 * * 1-5", int64(8*time.Hour), uint8(1), false, int64(1796461200), int64(0))
	f.Add("@daily", int64(time.Hour), uint8(5), true, "* * * * *", int64(time.Minute), uint8(0), false, int64(1774746000), int64(1))
	f.Add("30 2 * * *", int64(10*time.Minute), uint8(2), false, "0 0 29 2 *", int64(70000*time.Hour), uint8(3), true, int64(1792889400), int64(999999999))
	f.Add("0 */2 * * *", int64(2*time.Hour), uint8(6), true, "bad", int64(-1), uint8(7), false, int64(0), int64(0))
	f.Fuzz(func(t *testing.T, s1 string, d1 int64, z1 uint8, deny1 bool, s2 string, d2 int64, z2 uint8, deny2 bool, sec, nsec int64) {
		spec := func(sched string, d int64, z uint8, deny bool) Spec {
			sp := Spec{Kind: KindAllow, Schedule: sched, Duration: time.Duration(d).String(), Timezone: fuzzZones[int(z)%len(fuzzZones)]}
			if deny {
				sp.Kind = KindDeny
			}
			return sp
		}
		set, err := Compile([]Spec{spec(s1, d1, z1, deny1), spec(s2, d2, z2, deny2)})
		if err != nil {
			if set != nil {
				t.Fatalf("Compile returned a set and %v", err)
			}
			return
		}
		// 1970 to about 2200: robfig/cron's range, and t±Duration stays valid.
		const maxSec = 7258118400
		tm := time.Unix(absMod(sec, maxSec), absMod(nsec, int64(time.Second))).UTC()
		st := set.At(tm)
		if st.Open == (st.Reason != "") {
			t.Fatalf("At(%s) = %+v: reason must be set exactly when closed", tm, st)
		}
		if st.Until.IsZero() {
			return
		}
		if !st.Until.After(tm) || st.Until.After(tm.Add(Horizon)) {
			t.Fatalf("At(%s).Until = %s, not in (t, t+Horizon]", tm, st.Until)
		}
		if at := set.At(st.Until); at.Open == st.Open {
			t.Fatalf("At(%s) = %+v but At(Until) = %+v: no flip", tm, st, at)
		}
		if before := set.At(st.Until.Add(-time.Nanosecond)); before.Open != st.Open {
			t.Fatalf("At(%s) = %+v but At(Until-1ns) = %+v: Until is not the first flip", tm, st, before)
		}
	})
}

func absMod(x, m int64) int64 {
	x %= m
	if x < 0 {
		x += m
	}
	return x
}
