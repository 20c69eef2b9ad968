package main

import (
	"bytes"
	"encoding/base64"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/capstan-dev/capstan/internal/lab"
)

// labSecretValues are the secret values every e2e daemon is given: the
// app's secrets (secrets_env_file), the webhook secret and the API token.
var labSecretValues = []string{"s3cret-value-1", "lab-registry-password", "gh-secret", "api-token-123"}

// auditSecrets fails t when data (what capstan showed or kept, named by
// where) holds a secret value, plain or base64.
func auditSecrets(t testing.TB, where string, data []byte) {
	t.Helper()
	for _, s := range labSecretValues {
		for _, form := range []string{s, base64.StdEncoding.EncodeToString([]byte(s)), base64.RawURLEncoding.EncodeToString([]byte(s))} {
			if bytes.Contains(data, []byte(form)) {
				t.Errorf("secrets audit: %s holds the secret %q (as %q)", where, s[:3]+"…", form[:3]+"…")
			}
		}
	}
}

// auditLive checks what a running daemon shows: its metrics, status page
// and API.
func (d *serveProc) auditLive() {
	for _, path := range []string{"/metrics", "/", "/api/v1/apps", "/api/v1/drift", "/api/v1/apps/testapp/history", "/api/v1/apps/testapp/logs"} {
		if code, body := d.get(path, "Bearer "+d.token); code == 200 {
			auditSecrets(d.t, "GET "+path, body)
		}
	}
}

// auditKept checks what a stopped daemon wrote: every log line of every
// run, and every file of its state directory (the SQLite database and its
// WAL, the repository caches excluded: they hold the repo as committed).
func (d *serveProc) auditKept() {
	auditSecrets(d.t, "the daemon's log", []byte(d.pastLogs+d.logs.String()))
	state := filepath.Join(filepath.Dir(d.cfg), "state")
	_ = filepath.WalkDir(state, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.IsDir() && e.Name() == "repos" {
			return filepath.SkipDir
		}
		if !e.IsDir() {
			if b, err := os.ReadFile(p); err == nil {
				auditSecrets(d.t, p, b)
			}
		}
		return nil
	})
}

// startLab is lab.Start with the audit of every command line the hosts
// ran during the test (logged by the lab's sshd), at cleanup.
func startLab(t testing.TB, n int) *lab.Lab {
	l := lab.Start(t, n)
	for i := range l.Hosts {
		_ = os.Truncate(l.CommandLog(i), 0)
	}
	t.Cleanup(func() {
		logged := 0
		for i := range l.Hosts {
			b, err := os.ReadFile(l.CommandLog(i))
			if err != nil {
				continue
			}
			logged += len(b)
			auditSecrets(t, "the command lines run on "+l.Hosts[i].Name, b)
		}
		if logged == 0 {
			t.Error("secrets audit: no command line was logged on any host (does the lab's sshd log them? capstan-lab down; capstan-lab up)")
		}
	})
	return l
}
