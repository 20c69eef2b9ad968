package main

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile"
)

func TestLogsFlags_Options(t *testing.T) {
	e := &env{stderr: io.Discard}
	for _, c := range []struct {
		flags logsFlags
		lines int
		grep  string
	}{
		{logsFlags{lines: -1}, defaultLogLines, ""},
		{logsFlags{lines: -1, since: time.Minute}, 0, ""},
		{logsFlags{lines: -1, grep: "GET /"}, 0, "GET /"},
		{logsFlags{lines: 7, grep: "x"}, 7, "x"},
		{logsFlags{lines: 0}, 0, ""},
	} {
		o, err := c.flags.options(e)
		if err != nil {
			t.Fatal(err)
		}
		if o.Lines != c.lines || (o.Grep == nil) != (c.grep == "") || o.Grep != nil && o.Grep.String() != c.grep {
			t.Errorf("%+v: lines %d grep %v, want %d %q", c.flags, o.Lines, o.Grep, c.lines, c.grep)
		}
	}
	o, _ := (&logsFlags{roles: "web, worker,", hosts: "10.0.0.1"}).options(e)
	if !slices.Equal(o.Roles, []string{"web", "worker"}) || !slices.Equal(o.Hosts, []string{"10.0.0.1"}) {
		t.Errorf("roles %q hosts %q", o.Roles, o.Hosts)
	}
	for _, bad := range []logsFlags{{grep: "("}, {since: -time.Second}} {
		if _, err := bad.options(e); !errors.Is(err, errUsage) {
			t.Errorf("%+v: %v, want a usage error", bad, err)
		}
	}
}

func TestWriteDetails(t *testing.T) {
	var b strings.Builder
	err := writeDetails(&b, []reconcile.HostDetails{
		{Host: "10.0.0.1", Containers: []reconcile.ContainerDetails{
			{Name: "testapp-web-v2", Kind: "app", Role: "web", Version: "v2", State: "running", Health: "healthy", Current: true,
				Uptime: "5m0s", Digests: []string{"r/testapp@sha256:0123456789abcdef0123"}, Route: "testapp-web"},
			{Name: "kamal-proxy", Kind: "proxy", Version: "v0.9.0", State: "running", Current: true},
		}},
		{Host: "10.0.0.2", Error: "observe: host unreachable", Containers: []reconcile.ContainerDetails{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `10.0.0.1:
  NAME            KIND   ROLE  VERSION  STATE              HEALTH   UPTIME  DIGEST               ROUTE
  testapp-web-v2  app    web   v2       running (current)  healthy  5m0s    sha256:0123456789ab  testapp-web
  kamal-proxy     proxy  -     v0.9.0   running            -        -       -                    -
10.0.0.2:
  error: observe: host unreachable
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}
