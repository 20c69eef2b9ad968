package window_test

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/capstan-dev/capstan/reconcile/window"
)

func ExampleSet_At() {
	var app struct {
		Windows []window.Spec `yaml:"windows"`
	}
	doc := `
windows:
  - kind: deny
    schedule: "0 18 * * 5"
    duration: 62h
    timezone: Europe/Berlin
`
	if err := yaml.Unmarshal([]byte(doc), &app); err != nil {
		panic(err)
	}
	set, err := window.Compile(app.Windows)
	if err != nil {
		panic(err)
	}
	saturday := time.Date(2026, 12, 5, 11, 0, 0, 0, time.UTC)
	st := set.At(saturday)
	fmt.Println(st.Open, st.Reason)
	st = set.At(st.Until)
	fmt.Println(st.Open, st.Until)
	// Output:
	// false inside deny window "0 18 * * 5" (62h, Europe/Berlin) until 2026-12-07T08:00:00+01:00
	// true 2026-12-11 17:00:00 +0000 UTC
}

func ExampleCompile_error() {
	_, err := window.Compile([]window.Spec{{Kind: "allow", Schedule: "0 9 * * 1-5", Duration: "8h", Timezone: "Europe/Berln"}})
	fmt.Println(err)
	// Output:
	// windows[0].timezone: unknown time zone "Europe/Berln" (use an IANA name such as "Europe/Berlin")
}
