package window

import (
	"testing"
	"time"
)

// BenchmarkSet_At: a typical set, and the worst case MaxSteps bounds (a
// window chained every minute next to one that never flips the state).
func BenchmarkSet_At(b *testing.B) {
	sets := map[string][]Spec{
		"weekend freeze and business hours": {
			{Kind: "deny", Schedule: "0 18 * * 5", Duration: "62h", Timezone: "Europe/Berlin"},
			{Kind: "allow", Schedule: "0 9 * * 1-5", Duration: "8h", Timezone: "Europe/Berlin"},
		},
		"dense": {
			{Kind: "allow", Schedule: "* * * * *", Duration: "1m"},
			{Kind: "deny", Schedule: "0 0 1 1 *", Duration: "1h"},
		},
	}
	t := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for name, specs := range sets {
		set, err := Compile(specs)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				set.At(t)
			}
		})
	}
}
