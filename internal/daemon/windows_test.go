package daemon

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestWindows_Config: deploy windows are compiled at load, every error at
// its FILE:LINE and key, and a valid set reaches the loop.
func TestWindows_Config(t *testing.T) {
	p := writeFile(t, `apps:
  - name: a
    repo: /r
    windows:
      - {kind: deny, schedule: "0 18 * * 5", duration: 62h, timezone: Mars/Olympus}
      - {kind: maybe, schedule: "0 9 * * 1-5", duration: 8h}
`)
	_, err := LoadConfig(p, func(string) string { return "" })
	var errs ConfigErrors
	if !errors.As(err, &errs) {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{p + ":5: apps[0].windows[0].timezone: ", p + ":6: apps[0].windows[1].kind: "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	p = writeFile(t, `apps:
  - name: a
    repo: /r
    heal_in_windows: true
    windows:
      - {kind: deny, schedule: "0 18 * * 5", duration: 62h, timezone: Europe/Berlin}
`)
	cfg, err := LoadConfig(p, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	st := windowState(cfg.Apps[0].windows)(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)) // a Saturday
	if st.Open || !st.Until.Equal(time.Date(2026, 12, 7, 7, 0, 0, 0, time.UTC)) || !cfg.Apps[0].HealInWindows {
		t.Errorf("Saturday noon: %+v, heal_in_windows %v", st, cfg.Apps[0].HealInWindows)
	}
}
