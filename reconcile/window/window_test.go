package window

import (
	"errors"
	"strings"
	"testing"
)

func TestCompile_Errors(t *testing.T) {
	ok := Spec{Kind: "allow", Schedule: "0 9 * * 1-5", Duration: "8h", Timezone: "Europe/Berlin"}
	with := func(edit func(*Spec)) Spec { sp := ok; edit(&sp); return sp }
	tests := []struct {
		name string
		bad  Spec
		key  string
		msg  string // substring of Msg
	}{
		{"kind missing", with(func(s *Spec) { s.Kind = "" }), "kind", "required"},
		{"kind unknown", with(func(s *Spec) { s.Kind = "Deny" }), "kind", `got "Deny"`},
		{"schedule missing", with(func(s *Spec) { s.Schedule = " " }), "schedule", "required"},
		{"schedule out of range", with(func(s *Spec) { s.Schedule = "61 * * * *" }), "schedule", "61"},
		{"schedule six fields", with(func(s *Spec) { s.Schedule = "0 0 9 * * 1" }), "schedule", "expected exactly 5 fields"},
		{"schedule @every", with(func(s *Spec) { s.Schedule = "@every 1h" }), "schedule", "@every"},
		{"schedule unknown descriptor", with(func(s *Spec) { s.Schedule = "@fortnightly" }), "schedule", "descriptor"},
		{"schedule TZ prefix", with(func(s *Spec) { s.Schedule = "CRON_TZ=UTC 0 9 * * *" }), "schedule", "timezone key"},
		{"duration missing", with(func(s *Spec) { s.Duration = "" }), "duration", "required"},
		{"duration garbage", with(func(s *Spec) { s.Duration = "8 hours" }), "duration", "unknown unit"},
		{"duration no unit", with(func(s *Spec) { s.Duration = "8" }), "duration", "missing unit"},
		{"duration zero", with(func(s *Spec) { s.Duration = "0s" }), "duration", "> 0"},
		{"duration negative", with(func(s *Spec) { s.Duration = "-1h" }), "duration", "> 0"},
		{"timezone unknown", with(func(s *Spec) { s.Timezone = "Mars/Olympus" }), "timezone", "unknown time zone"},
		{"timezone Local", with(func(s *Spec) { s.Timezone = "Local" }), "timezone", "depends on the host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := Compile([]Spec{ok, tt.bad})
			if set != nil || err == nil {
				t.Fatalf("Compile = %v, %v; want an error", set, err)
			}
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a *SpecError", err)
			}
			if se.Index != 1 || se.Key != tt.key || !strings.Contains(se.Msg, tt.msg) {
				t.Errorf("SpecError = %+v, want index 1, key %q, msg containing %q", *se, tt.key, tt.msg)
			}
			if prefix := "windows[1]." + tt.key + ": "; !strings.HasPrefix(se.Error(), prefix) {
				t.Errorf("Error() = %q, want prefix %q", se.Error(), prefix)
			}
		})
	}
}

// Every invalid field of every window comes back at once, in order.
func TestCompile_AllErrors(t *testing.T) {
	_, err := Compile([]Spec{
		{Kind: "maybe", Schedule: "nope", Duration: "8h"},
		{Kind: "deny", Schedule: "0 18 * * 5", Duration: "62h"},
		{Kind: "deny", Schedule: "0 18 * * 5", Duration: "x", Timezone: "Nowhere"},
	})
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %v does not unwrap to a list", err)
	}
	var got []string
	for _, e := range joined.Unwrap() {
		var se *SpecError
		if !errors.As(e, &se) {
			t.Fatalf("%v is not a *SpecError", e)
		}
		got = append(got, se.Error()[:strings.Index(se.Error(), ":")])
	}
	want := []string{"windows[0].kind", "windows[0].schedule", "windows[2].duration", "windows[2].timezone"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("errors at %v, want %v", got, want)
	}
}

// The default zone is UTC and shows in the reason; descriptors compile.
func TestCompile_Defaults(t *testing.T) {
	set, err := Compile([]Spec{
		{Kind: "deny", Schedule: "@weekly", Duration: "1h"},
		{Kind: "allow", Schedule: " 0 9 * * 1-5 ", Duration: "8h", Timezone: "UTC"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if tz := set.windows[0].spec.Timezone; tz != "UTC" {
		t.Errorf("default timezone %q, want UTC", tz)
	}
	if s := set.windows[1].spec.Schedule; s != "0 9 * * 1-5" {
		t.Errorf("schedule kept as %q, want it trimmed for messages", s)
	}
	if set.allows != 1 || !set.windows[0].deny || set.windows[1].deny {
		t.Errorf("kinds not compiled: %+v", set.windows)
	}
}
