package reconcile

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// unixDialer dials one local unix socket whatever host and address are asked.
type unixDialer struct {
	path  string
	mu    sync.Mutex
	addrs []string
}

func (d *unixDialer) Dial(ctx context.Context, host, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, host+" "+network+" "+addr)
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, "unix", d.path)
}

// fakeEngine answers the Docker Engine API calls apply makes.
func fakeEngine(t *testing.T) (*dockerAPI, *unixDialer, *[]string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var calls []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		switch {
		case r.URL.Path == "/images/create":
			mu.Lock()
			calls = append(calls, "auth "+r.Header.Get("X-Registry-Auth"))
			mu.Unlock()
			w.Write([]byte(`{"status":"Pulling from app","id":"v2"}` + "\n" + `{"status":"Downloading","progressDetail":{"current":1}}` + "\n"))
			if strings.Contains(r.URL.Query().Get("fromImage"), "bad") {
				w.Write([]byte(`{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}` + "\n"))
			}
		case r.URL.Path == "/images/reg:5000/app:v2/json":
			w.Write([]byte(`{"RepoDigests":["reg:5000/app@sha256:abc"],"Config":{"Labels":{"service":"app"}}}`))
		case strings.HasPrefix(r.URL.Path, "/images/") && strings.HasSuffix(r.URL.Path, "/json"):
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"No such image"}`))
		case r.URL.Path == "/containers/c1/start":
			w.WriteHeader(http.StatusNotModified) // already started
		case r.URL.Path == "/containers/c1/json":
			w.Write([]byte(`{"Id":"c1full","Name":"/app-web-v2","RestartCount":1,"State":{"Status":"running","ExitCode":0,"Health":{"Status":"starting"}},"NetworkSettings":{"Networks":{"kamal":{"IPAddress":"172.18.0.5"}}}}`))
		case r.URL.Path == "/containers/gone/stop":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"No such container: gone"}`))
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	d := &unixDialer{path: sock}
	api := &dockerAPI{dial: d}
	api.learn("h1", "/root", "", "")
	return api, d, &calls
}

func TestDockerAPI_Calls(t *testing.T) {
	api, dialer, calls := fakeEngine(t)
	ctx := context.Background()
	if !api.usable("h1") || api.usable("h2") {
		t.Fatal("usable: only a host the observe script saw")
	}
	info, found, err := api.image(ctx, "h1", "reg:5000/app:v2")
	if err != nil || !found || info.Config.Labels["service"] != "app" || len(info.RepoDigests) != 1 {
		t.Errorf("image: %+v %v %v", info, found, err)
	}
	if _, found, err := api.image(ctx, "h1", "reg:5000/app:v9"); err != nil || found {
		t.Errorf("missing image: found %v, err %v; want not found and no error", found, err)
	}
	if err := api.start(ctx, "h1", "c1"); err != nil {
		t.Errorf("start of a running container (304): %v", err)
	}
	in, err := api.inspect(ctx, "h1", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if c := in.live("kamal"); c.ID != "c1full" || c.Name != "app-web-v2" || c.IP != "172.18.0.5" {
		t.Errorf("live = %+v", c)
	}
	if st := in.state(); st.Status != "running" || st.Health != "starting" || st.RestartCount != 1 || st.crashed() == nil {
		t.Errorf("state = %+v (crashed: %v)", st, st.crashed())
	}
	ten := 10
	if err := api.stop(ctx, "h1", "c1", &ten); err != nil {
		t.Error(err)
	}
	err = api.stop(ctx, "h1", "gone", nil)
	var ae *apiError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || !strings.Contains(err.Error(), "No such container") {
		t.Errorf("stop of a missing container: %v", err)
	}
	if err := api.tag(ctx, "h1", "reg:5000/app:v2", "reg:5000/app", "latest"); err != nil {
		t.Error(err)
	}
	want := []string{
		"GET /images/reg:5000/app:v2/json",
		"GET /images/reg:5000/app:v9/json",
		"POST /containers/c1/start",
		"GET /containers/c1/json",
		"POST /containers/c1/stop?t=10",
		"POST /containers/gone/stop",
		"POST /images/reg:5000/app:v2/tag?repo=reg%3A5000%2Fapp&tag=latest",
	}
	if strings.Join(*calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(*calls, "\n"), strings.Join(want, "\n"))
	}
	if dialer.addrs[0] != "h1 unix "+DockerSocket {
		t.Errorf("dialled %q, want the host's docker socket", dialer.addrs[0])
	}
	api.markBroken("h1")
	if api.usable("h1") {
		t.Error("a host marked broken stays usable")
	}
}

func TestDockerAPI_Pull(t *testing.T) {
	api, _, calls := fakeEngine(t)
	ctx := context.Background()
	auth := registryAuth("reg:5000", "lab", "s3cr3t")
	if err := api.pull(ctx, "h1", "reg:5000/app:v2", auth); err != nil {
		t.Fatal(err)
	}
	err := api.pull(ctx, "h1", "reg:5000/bad@sha256:abc", "")
	var ae *apiError
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "manifest unknown") {
		t.Errorf("an error in the progress stream: %v", err)
	}
	want := []string{
		"POST /images/create?fromImage=reg%3A5000%2Fapp&tag=v2", "auth " + auth,
		"POST /images/create?fromImage=reg%3A5000%2Fbad&tag=sha256%3Aabc", "auth ",
	}
	if strings.Join(*calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(*calls, "\n"), strings.Join(want, "\n"))
	}
	dec, _ := base64.URLEncoding.DecodeString(auth)
	if string(dec) != `{"password":"s3cr3t","serveraddress":"reg:5000","username":"lab"}` {
		t.Errorf("X-Registry-Auth decodes to %s", dec)
	}
}

func TestSplitRef(t *testing.T) {
	for in, want := range map[string][2]string{
		"reg:5000/app:v2":         {"reg:5000/app", "v2"},
		"reg:5000/app":            {"reg:5000/app", "latest"},
		"app@sha256:abc":          {"app", "sha256:abc"},
		"reg:5000/app@sha256:abc": {"reg:5000/app", "sha256:abc"},
	} {
		if r, tag := splitRef(in); r != want[0] || tag != want[1] {
			t.Errorf("splitRef(%q) = %q, %q", in, r, tag)
		}
	}
}
