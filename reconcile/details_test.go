package reconcile

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// routesOnly is a proxy driver that only lists routes.
type routesOnly struct {
	proxy.Driver
	routes map[string][]proxy.LiveRoute
}

func (r routesOnly) Routes(_ context.Context, host string) ([]proxy.LiveRoute, error) {
	return r.routes[host], nil
}

// inspectHosts answers the details inspect with canned text per host.
type inspectHosts struct {
	scriptedHosts
	inspect map[string]string
	argv    map[string][]string
}

func (h *inspectHosts) Run(ctx context.Context, host string, argv []string, stdin io.Reader) ([]byte, error) {
	if len(argv) > 3 && argv[3] == detailsMarker {
		h.mu.Lock()
		h.argv[host] = argv[4:]
		h.mu.Unlock()
		return []byte(h.inspect[host]), nil
	}
	return h.scriptedHosts.Run(ctx, host, argv, stdin)
}

func TestDetails_ListsTheAppsContainers(t *testing.T) {
	a := testApp(t, "v2")
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	a.Now = func() time.Time { return now }
	web2 := running(a, "10.0.0.1", "web", "v2")
	web2.Status = "Up 5 minutes (healthy)"
	web1 := running(a, "10.0.0.1", "web", "v1")
	web1.State = "exited"
	old := running(a, "10.0.0.1", "web", "v0")
	old.State = "exited"
	px := proxyC()
	px.Image = "basecamp/kamal-proxy:v0.9.0"
	other := Container{ID: "zzz", Name: "postgres", State: "running", Image: "postgres:16"}
	h := &inspectHosts{scriptedHosts: scriptedHosts{t: t, containers: map[string][]Container{
		"10.0.0.1": {px, web2, web1, old, other},
		"10.0.0.3": {running(a, "10.0.0.3", "worker", "v2")},
	}, down: map[string]bool{"10.0.0.2": true}}, argv: map[string][]string{}}
	h.inspect = map[string]string{
		"10.0.0.1": "p sha256:pimg 2026-11-29T11:00:00.5Z\n" +
			"id-testapp-web-v2 sha256:v2img 2026-11-29T11:55:00Z\n" +
			detailsMarker + "\n" +
			`sha256:v2img ["10.231.0.1:5000/testapp@sha256:abc"]` + "\n" + `sha256:pimg []` + "\n",
		"10.0.0.3": "",
	}
	a.SSH = h
	a.Proxy = routesOnly{routes: map[string][]proxy.LiveRoute{"10.0.0.1": {{Name: "testapp-web", Targets: []proxy.Target{{Container: "id-testapp-web-v2"[:8], Port: 3000}}}}}}
	got, err := a.Details(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[1].Host != "10.0.0.2" || !strings.Contains(got[1].Error, "no route to host") {
		t.Fatalf("hosts: %+v", got)
	}
	var rows []string
	for _, c := range got[0].Containers {
		rows = append(rows, strings.Join([]string{c.Name, c.Kind, c.Role, c.Version, c.State, c.Health, c.Uptime, strings.Join(c.Digests, ","), c.Route}, "|"))
	}
	want := []string{
		"kamal-proxy|proxy||v0.9.0|running||1h0m0s||",
		"testapp-web-v2|app|web|v2|running|healthy|5m0s|10.231.0.1:5000/testapp@sha256:abc|testapp-web",
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("10.0.0.1:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
	if !got[0].Containers[1].Current || got[0].Containers[0].Current && got[0].Containers[0].Kind != KindProxy {
		t.Errorf("current flags: %+v", got[0].Containers)
	}
	if strings.Join(h.argv["10.0.0.1"], " ") != "p id-testapp-web-v2" {
		t.Errorf("inspected %q", h.argv["10.0.0.1"])
	}
	// The worker host: its container, no route, no inspect data (left out).
	if w := got[2].Containers; len(w) != 1 || w[0].Name != "testapp-worker-v2" || w[0].Version != "v2" || w[0].Route != "" || w[0].Uptime != "" {
		t.Errorf("10.0.0.3: %+v", w)
	}
}

// TestDetails_WantedContainerStopped: the container the config wants is
// listed in whatever state it is; an old running one is current.
func TestDetails_WantedContainerStopped(t *testing.T) {
	a := testApp(t, "v2")
	want := running(a, "10.0.0.3", "worker", "v2")
	want.State = "exited"
	h := &inspectHosts{scriptedHosts: scriptedHosts{t: t, containers: map[string][]Container{
		"10.0.0.3": {want, running(a, "10.0.0.3", "worker", "v1")},
	}}, argv: map[string][]string{}}
	a.SSH = h
	a.Hosts = a.Hosts[2:]
	got, err := a.Details(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, c := range got[0].Containers {
		rows = append(rows, c.Name+" "+c.State+" "+map[bool]string{true: "current"}[c.Current])
	}
	if s := strings.Join(rows, ", "); s != "testapp-worker-v2 exited , testapp-worker-v1 running current" {
		t.Errorf("rows: %s", s)
	}
}

// TestInspectDetailsScript runs the inspect script through /bin/sh with a
// fake docker: container lines, the marker, then one image inspect of the
// distinct image IDs.
func TestInspectDetailsScript(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := `#!/bin/sh
echo "$*" >> ` + filepath.Join(dir, "docker.log") + `
case "$1" in
inspect) shift 5; for id in "$@"; do echo "$id sha256:img 2026-11-29T11:00:00Z"; done ;;
image) echo 'sha256:img ["r/app@sha256:d"]' ;;
esac
`
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	argv := inspectDetailsArgv([]string{"c1", "c2"})
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		t.Fatal(err)
	}
	cs := []ContainerDetails{{ID: "c1", State: "running"}, {ID: "c2", State: "exited"}, {ID: "gone"}}
	addInspected(cs, out, time.Date(2026, 11, 29, 11, 0, 30, 0, time.UTC))
	if cs[0].Uptime != "30s" || cs[1].Uptime != "" || cs[1].Started.IsZero() || len(cs[0].Digests) != 1 || cs[0].Digests[0] != "r/app@sha256:d" || !cs[2].Started.IsZero() {
		t.Errorf("inspected %+v\noutput:\n%s", cs, out)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "docker.log"))
	if want := "inspect --type container --format {{.Id}} {{.Image}} {{.State.StartedAt}} c1 c2\nimage inspect --format {{.Id}} {{json .RepoDigests}} sha256:img\n"; string(log) != want {
		t.Errorf("docker ran:\n%s\nwant:\n%s", log, want)
	}
}
