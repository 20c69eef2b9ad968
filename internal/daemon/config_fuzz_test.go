package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzLoadConfig feeds arbitrary capstan.yml text to LoadConfig. Whatever
// the input: no panic; an error is ConfigErrors (each one line, naming
// the file) or an error naming the file; a config that loads has apps
// with valid unique names, a path inside the repository and no negative
// duration.
func FuzzLoadConfig(f *testing.F) {
	f.Add(`apps:
  - name: myapp
    repo: ssh://git@example.com/acme/myapp.git
    poll: 60s
    drift_schedule: "*/5 * * * *"
    lock_timeout: 5m
image_wait: 600
alerts:
  - {type: webhook, url: "https://example.com/h", remind: 1h}
ssh: {connect_timeout: 10s, command_timeout: 0, observe_timeout: 5s}
`)
	f.Add("apps:\n  - {name: a, repo: r, path: ../x, poll: -5}\n  - {name: a, repo: r}\n")
	f.Add("listen: 0.0.0.0:80\napps: [{name: \"A\\n\", repo: r, drift_schedule: \"@every 0s\"}]\n")
	f.Add("apps: &a [*a]\n")
	f.Add("image_wait: -1\napps: [{name: a, repo: r, lock_timeout: 99999999999999999}]\n")
	dir := f.TempDir()
	env := map[string]string{"SET": "x"}
	getenv := func(k string) string { return env[k] }
	f.Fuzz(func(t *testing.T, text string) {
		p := filepath.Join(dir, "capstan.yml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c, err := LoadConfig(p, getenv)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("LoadConfig took %v", d)
		}
		if err != nil {
			var ce ConfigErrors
			if errors.As(err, &ce) {
				for _, e := range ce {
					if !strings.HasPrefix(e, p+":") || strings.Contains(e, "\n") {
						t.Fatalf("config error %q: want one line starting with %s:", e, p)
					}
				}
			} else if !strings.HasPrefix(err.Error(), p) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if len(c.Apps) == 0 {
			t.Fatal("no apps loaded without an error")
		}
		seen := map[string]bool{}
		for _, a := range c.Apps {
			if !appNameRE.MatchString(a.Name) || seen[a.Name] {
				t.Fatalf("app name %q loaded", a.Name)
			}
			seen[a.Name] = true
			if strings.Contains(a.Path, "..") || a.Repo == "" || time.Duration(a.Poll) < time.Second {
				t.Fatalf("app %+v loaded", a)
			}
			if a.LockTimeout < 0 {
				t.Fatalf("negative lock_timeout %v loaded", time.Duration(a.LockTimeout))
			}
		}
		for _, d := range []Duration{c.ImageWait, c.SSH.ConnectTimeout, c.SSH.CommandTimeout, c.SSH.ObserveTimeout} {
			if d < 0 {
				t.Fatalf("negative duration %v loaded", time.Duration(d))
			}
		}
		for _, al := range c.Alerts {
			if al.Remind < 0 {
				t.Fatalf("negative remind %v loaded", time.Duration(al.Remind))
			}
		}
	})
}
