package reconcile

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

const (
	apiList = `[{"Id":"3f1c0de2a9b8e7","Names":["/app-web-v2"],"Image":"reg:5000/app:v2","ImageID":"sha256:1","Command":"bin/start","Created":1764135744,"Ports":[],"Labels":{"service":"app","role":"web","destination":"","capstan.fingerprint":"ab12"},"State":"running","Status":"Up 2 minutes (healthy)","HostConfig":{"NetworkMode":"kamal"},"NetworkSettings":{"Networks":{"kamal":{"IPAddress":"172.18.0.5"},"bridge":{}}},"Mounts":[]},` +
		`{"Id":"9a8b","Names":["/kamal-proxy"],"Image":"basecamp/kamal-proxy:v0.9.0","Created":1763600000,"Labels":{"org.opencontainers.image.title":"kamal-proxy"},"State":"running","Status":"Up 3 days","NetworkSettings":{"Networks":{"kamal":{}}}}]`
	apiInspectAnswer = `{"Id":"c1full","Name":"/app-web-v2","RestartCount":1,"State":{"Status":"running","ExitCode":0,"Health":{"Status":"starting","FailingStreak":0,"Log":[]}},"NetworkSettings":{"Networks":{"kamal":{"IPAddress":"172.18.0.5"}}}}`
	apiPullStream    = `{"status":"Pulling from app","id":"v2"}` + "\n" + `{"status":"Downloading","progressDetail":{"current":1,"total":10},"id":"a1"}` + "\n" + `{"status":"Digest: sha256:abc"}` + "\n"
)

// FuzzDecodeContainers: any answer to GET /containers/json is an error
// wrapping ErrObserve, or one Container per entry, newest first, names
// without Docker's leading "/" and networks sorted.
func FuzzDecodeContainers(f *testing.F) {
	for _, s := range []string{apiList, "[]", "null", "", "[", `[{"Id":5}]`, `[{"Names":"x"}]`, `[{"Created":"yesterday"}]`,
		`[{"Labels":[]}]`, `{"message":"page not found"}`, `[{"Names":[]},{"Names":null}]`, `[{"Created":-9223372036854775808},{"Created":9223372036854775807}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var list []apiContainer
		if err := decodeAnswer("/containers/json", b, &list); err != nil {
			if !errors.Is(err, ErrObserve) {
				t.Fatalf("error %v does not wrap ErrObserve", err)
			}
			return
		}
		cs := containersFrom(list)
		if len(cs) != len(list) {
			t.Fatalf("%d containers from %d entries", len(cs), len(list))
		}
		for i, c := range cs {
			if i > 0 && c.Created.After(cs[i-1].Created) {
				t.Fatal("not newest first")
			}
			if !sort.StringsAreSorted(c.Networks) {
				t.Fatalf("networks %q not sorted", c.Networks)
			}
		}
	})
}

// FuzzDecodeInspect: any answer to GET /containers/{id}/json is an error
// wrapping ErrObserve, or an inspection whose live view and state can be
// read (a missing network or health check leaves zero values).
func FuzzDecodeInspect(f *testing.F) {
	for _, s := range []string{apiInspectAnswer, "{}", "null", `{"State":null,"NetworkSettings":null}`, `{"State":{"Health":null}}`,
		`{"RestartCount":"1"}`, `{"RestartCount":99999999999999999999}`, `{"NetworkSettings":{"Networks":{"kamal":null}}}`, `{"Id":` + "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var in apiInspect
		if err := decodeAnswer("/containers/x/json", b, &in); err != nil {
			if !errors.Is(err, ErrObserve) {
				t.Fatalf("error %v does not wrap ErrObserve", err)
			}
			return
		}
		if c := in.live("kamal"); strings.HasPrefix(c.Name, "/") && !strings.HasPrefix(in.Name, "//") {
			t.Fatalf("name %q keeps its slash", c.Name)
		}
		_ = in.state()
	})
}

// FuzzReadPull: a pull's progress stream ends in nil, an *apiError naming
// the error message it carried, or an error wrapping ErrObserve; never a
// panic, and an *apiError's text stays bounded.
func FuzzReadPull(f *testing.F) {
	for _, s := range []string{apiPullStream, "", apiPullStream + `{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}` + "\n",
		`{"error":"toomanyrequests: rate limit"}`, apiPullStream[:50], "not json", `{"error":5}`, `{"errorDetail":"x"}`, "[]", "null\nnull",
		`{"error":"` + strings.Repeat("e", 2*maxAPIMessage) + `"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := readPull(strings.NewReader(string(b)))
		var ae *apiError
		switch {
		case err == nil, errors.Is(err, ErrObserve):
		case errors.As(err, &ae):
			if ae.Message == "" || len(ae.Error()) > maxAPIMessage+64 || !utf8.ValidString(ae.Error()) {
				t.Fatalf("apiError %q", ae.Error())
			}
		default:
			t.Fatalf("error %v is neither an apiError nor ErrObserve", err)
		}
	})
}

// FuzzNewAPIError: whatever an error answer holds, the error's text is
// valid UTF-8 of bounded length and names the status.
func FuzzNewAPIError(f *testing.F) {
	for _, s := range []string{`{"message":"No such container: gone"}`, "", "plain text\n", "\xff\xfe\xfd", `{"message":5}`,
		`{"message":"` + strings.Repeat("ü", maxAPIMessage) + `"}`, strings.Repeat("\x00", 1000)} {
		f.Add(404, []byte(s))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := newAPIError(status, body)
		if s := e.Error(); !utf8.ValidString(s) || len(s) > maxAPIMessage+64 || e.Status != status {
			t.Fatalf("apiError %q (status %d)", s, e.Status)
		}
	})
}

// engineWith is a Docker API for host h1 that h answers.
func engineWith(t *testing.T, h http.HandlerFunc) *dockerAPI {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	api := &dockerAPI{dial: &unixDialer{path: sock}}
	api.learn("h1", "/root", "", "")
	return api
}

// TestDockerAPI_MalformedAnswers: a daemon that answers truncated JSON,
// wrong types, huge fields or a cut stream gives errors (ErrObserve for
// what cannot be read, *apiError for its error answers), never a panic;
// huge names, NUL bytes, newlines and unicode in well-formed answers are
// carried verbatim.
func TestDockerAPI_MalformedAnswers(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name, answer string
		status       int
		wantObserve  bool
	}{
		{"truncated list", apiList[:len(apiList)/2], 200, true},
		{"list is an object", `{"Id":"a"}`, 200, true},
		{"Names is a string", `[{"Id":"a","Names":"/x"}]`, 200, true},
		{"Created is a string", `[{"Id":"a","Created":"2026-11-26"}]`, 200, true},
		{"Labels is a list", `[{"Id":"a","Labels":["service=app"]}]`, 200, true},
		{"HTML from a proxy", "<html><body>502 Bad Gateway</body></html>", 200, true},
		{"empty 200", "", 200, true},
		{"500 with a huge message", `{"message":"` + strings.Repeat("m", 64<<10) + `"}`, 500, false},
		{"500 with binary", "\x00\xff\xfe", 500, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			api := engineWith(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(c.status)
				io.WriteString(w, c.answer)
			})
			_, err := api.containers(ctx, "h1")
			var ae *apiError
			switch {
			case c.wantObserve && !errors.Is(err, ErrObserve):
				t.Errorf("err = %v, want ErrObserve", err)
			case !c.wantObserve && (!errors.As(err, &ae) || ae.Status != c.status || len(err.Error()) > maxAPIMessage+64 || !utf8.ValidString(err.Error())):
				t.Errorf("err = %.200v, want a bounded apiError %d", err, c.status)
			}
		})
	}
	t.Run("inspect wrong types", func(t *testing.T) {
		api := engineWith(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"Id":"a","State":"running"}`) })
		if _, err := api.inspect(ctx, "h1", "a"); !errors.Is(err, ErrObserve) {
			t.Errorf("err = %v, want ErrObserve", err)
		}
	})
	t.Run("pull stream cut mid-message", func(t *testing.T) {
		api := engineWith(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, apiPullStream+`{"status":"Downl`) })
		if err := api.pull(ctx, "h1", "reg:5000/app:v2", ""); !errors.Is(err, ErrObserve) {
			t.Errorf("err = %v, want ErrObserve", err)
		}
	})
	t.Run("pull stream read error", func(t *testing.T) {
		if err := readPull(iotest.TimeoutReader(strings.NewReader(apiPullStream))); !errors.Is(err, ErrObserve) {
			t.Errorf("err = %v, want ErrObserve", err)
		}
	})
	t.Run("huge and odd values verbatim", func(t *testing.T) {
		huge := strings.Repeat("n", 64<<10)
		answer := `[{"Id":"a","Names":["/` + huge + `"],"Image":"img\u0000\nwith newline","Labels":{"service":"ünï ウェブ 🚢","role":"$(reboot)"},"Created":1}]`
		api := engineWith(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, answer) })
		cs, err := api.containers(ctx, "h1")
		if err != nil {
			t.Fatal(err)
		}
		if c := cs[0]; c.Name != huge || c.Image != "img\x00\nwith newline" || c.Service != "ünï ウェブ 🚢" || c.Role != "$(reboot)" {
			t.Errorf("not verbatim: %.80q %q %q %q", c.Name, c.Image, c.Service, c.Role)
		}
	})
}
