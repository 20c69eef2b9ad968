package reconcile

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// psLine is one line of ObserveArgv's `docker ps` output as Docker's
// {{json}} template function prints it.
func psLine(t testing.TB, fields map[string]string) []byte {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// observeOutput frames ps lines, the home section and the lock section the
// way ObserveArgv's script prints them.
func observeOutput(ps []byte, home, lock string) []byte {
	return []byte(string(ps) + observeMarker + "\n" + home + observeMarker + "\n" + lock)
}

const (
	psWeb   = `{"id":"3f1c0de2a9b8","name":"app-web-7d4e1f2","image":"reg.example.com/app:7d4e1f2","state":"running","status":"Up 2 minutes (healthy)","created":"2026-11-26 05:42:24 +0000 UTC","service":"app","role":"web","destination":"","labels":"destination=,role=web,service=app,capstan.fingerprint=ab12","fingerprint":"ab12","title":"","networks":"kamal"}`
	psProxy = `{"id":"9a8b7c6d5e4f","name":"kamal-proxy","image":"basecamp/kamal-proxy:v0.9.0","state":"running","status":"Up 3 days","created":"2026-11-20 10:00:00 +0000 UTC","service":"","role":"","destination":"","labels":"org.opencontainers.image.title=kamal-proxy","fingerprint":"","title":"kamal-proxy","networks":"bridge,kamal"}`
	psDead  = `{"id":"0000","name":"app-web-old","image":"app:old","state":"exited","status":"Exited (137) 5 hours ago","created":"2026-11-25 01:02:03 +0000 UTC","service":"app","role":"web","destination":"staging","labels":"destination=staging,role=web,service=app","fingerprint":"","title":"","networks":""}`
)

// FuzzParseObserve: whatever a host prints, ParseObserve returns an error
// wrapping ErrObserve, or an observation of that host whose containers
// are newest first, no more of them than there are lines, and whose home
// and Docker settings carry no surrounding space.
func FuzzParseObserve(f *testing.F) {
	for _, seed := range []string{
		string(observeOutput([]byte(psWeb+"\n"+psProxy+"\n"+psDead+"\n"), "/home/deploy\n\n\n", "TG9ja2VkIGJ5OiBtZQ==\n")),
		string(observeOutput(nil, "/root\nunix:///run/user/1000/docker.sock\n\n\"currentContext\": \"rootless\"\n", "")),
		string(observeOutput([]byte(psWeb+"\n"), "/root\n", "plain text lock\nline two\n")),
		"",
		"garbage",
		observeMarker + "\n",
		string(observeOutput([]byte(`{"id":5}`+"\n"), "", "")),
		string(observeOutput([]byte(psWeb[:40]+"\n"), "/root\n", "")),
		string(observeOutput([]byte(psWeb+"\n"), "/root\n", observeMarker+"\n"+observeMarker+"\n")),
		string(observeOutput([]byte("null\n[]\n\"x\"\n"), "/root\n", "")),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		o, err := ParseObserve("h1", out)
		if err != nil {
			if !errors.Is(err, ErrObserve) {
				t.Fatalf("error %v does not wrap ErrObserve", err)
			}
			return
		}
		if o.Host != "h1" {
			t.Fatalf("host %q", o.Host)
		}
		if n := bytes.Count(out, []byte("\n")) + 1; len(o.Containers) > n {
			t.Fatalf("%d containers from %d lines", len(o.Containers), n)
		}
		for i := 1; i < len(o.Containers); i++ {
			if o.Containers[i].Created.After(o.Containers[i-1].Created) {
				t.Fatalf("containers not newest first: %v after %v", o.Containers[i].Created, o.Containers[i-1].Created)
			}
		}
		for _, s := range []string{o.Home, o.DockerHost, o.DockerContext} {
			if s != strings.TrimSpace(s) {
				t.Fatalf("%q keeps surrounding space", s)
			}
		}
	})
}

// FuzzParseObserve_Verbatim: names, images and labels, whatever bytes
// they hold, come back from a `docker ps` line exactly as Docker printed
// them: nothing is interpreted, cut or unescaped twice.
func FuzzParseObserve_Verbatim(f *testing.F) {
	f.Add("app-web-v1", "reg:5000/app:v1", "app", "web", "ff00")
	f.Add("a\x00b", "img\nwith newline", `svc"; rm -rf /`, "röle-ウェブ", "$(reboot)")
	f.Add(observeMarker, observeMarker+"\n", "x\r\ny", "\u2028", "\\u0000")
	f.Add(strings.Repeat("n", 4096), "i", "", "", "") // 64 KB: TestParseObserve_Malformed
	f.Fuzz(func(t *testing.T, name, image, service, role, fp string) {
		for _, s := range []string{name, image, service, role, fp} {
			if !utf8.ValidString(s) {
				return // Docker's {{json}} would replace the bytes; nothing to compare
			}
		}
		line := psLine(t, map[string]string{"id": "abc", "name": name, "image": image, "state": "running",
			"status": "Up", "created": "2026-11-26 05:42:24 +0000 UTC", "service": service, "role": role,
			"destination": "", "labels": "service=" + service, "fingerprint": fp, "title": "", "networks": "kamal"})
		o, err := ParseObserve("h", observeOutput(append(line, '\n'), "/root\n", ""))
		if err != nil {
			t.Fatalf("a well-formed line refused: %v", err)
		}
		if len(o.Containers) != 1 {
			t.Fatalf("%d containers", len(o.Containers))
		}
		c := o.Containers[0]
		if c.Name != name || c.Image != image || c.Service != service || c.Role != role || c.Fingerprint != fp {
			t.Fatalf("not verbatim: %+v", c)
		}
	})
}

// TestParseObserve_Malformed: truncated and mistyped lines, lines over the
// scanner's bound and broken framing are errors wrapping ErrObserve; huge
// fields, NUL bytes, newlines and unicode inside JSON strings are carried
// verbatim.
func TestParseObserve_Malformed(t *testing.T) {
	huge := strings.Repeat("x", 64<<10)
	for _, c := range []struct {
		name string
		out  []byte
	}{
		{"no markers", []byte(psWeb + "\n")},
		{"one marker", []byte(psWeb + "\n" + observeMarker + "\n/root\n")},
		{"truncated line", observeOutput([]byte(psWeb[:len(psWeb)/2]+"\n"), "/root\n", "")},
		{"id is a number", observeOutput([]byte(`{"id":5,"name":"x"}`+"\n"), "/root\n", "")},
		{"labels is an object", observeOutput([]byte(`{"id":"a","labels":{"service":"x"}}`+"\n"), "/root\n", "")},
		{"raw newline in a value", observeOutput([]byte(`{"id":"a","name":"x`+"\n"+`y"}`+"\n"), "/root\n", "")},
		{"raw NUL outside a string", observeOutput([]byte("{\"id\":\"a\"}\x00\n"), "/root\n", "")},
		{"line over 4 MiB", observeOutput([]byte(`{"id":"`+strings.Repeat("a", 5<<20)+`"}`+"\n"), "/root\n", "")},
		{"docker's error text", observeOutput([]byte("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n"), "/root\n", "")},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := ParseObserve("h", c.out); !errors.Is(err, ErrObserve) {
				t.Errorf("err = %v, want ErrObserve", err)
			}
		})
	}
	for _, v := range []string{huge, "a\x00b", "two\nlines", "ünï©ødé ウェブ 🚢", `"; docker rm -f $(docker ps -q) #`} {
		line := psLine(t, map[string]string{"id": "abc", "name": v, "image": v, "labels": "service=" + v, "service": v, "created": "2026-11-26 05:42:24 +0000 UTC"})
		o, err := ParseObserve("h", observeOutput(append(line, '\n'), "/root\n", ""))
		if err != nil {
			t.Fatalf("value %.20q: %v", v, err)
		}
		if c := o.Containers[0]; c.Name != v || c.Image != v || c.Service != v {
			t.Errorf("value %.20q not carried verbatim: %.40q", v, c.Name)
		}
	}
}

// FuzzParseInspect: the CLI inspect line gives a container with an ID and a
// name, or an error wrapping ErrObserve.
func FuzzParseInspect(f *testing.F) {
	for _, s := range []string{"3f1c0de2a9b8 /app-web-v1 172.18.0.5\n", "abc /x\n", "abc\n", "", "\x00 \x00", "id /name 1.2.3.4 extra words"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		c, err := parseInspect(out)
		if err != nil {
			if !errors.Is(err, ErrObserve) {
				t.Fatalf("error %v does not wrap ErrObserve", err)
			}
			return
		}
		if c.ID == "" || strings.ContainsAny(c.ID+c.Name+c.IP, " \t\n") {
			t.Fatalf("inspect gave %+v", c)
		}
	})
}
