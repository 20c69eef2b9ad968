package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// signer is an SSH signing key made with the real ssh-keygen.
type signer struct {
	key, pub    string // private key file, public key line (type and base64)
	fingerprint string // SHA256:…
}

func newSigner(t *testing.T, name string) signer {
	t.Helper()
	key := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	b, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	fp, err := exec.Command("ssh-keygen", "-l", "-f", key+".pub").Output()
	if err != nil {
		t.Fatal(err)
	}
	return signer{key: key, pub: f[0] + " " + f[1], fingerprint: strings.Fields(string(fp))[1]}
}

// signWith makes w sign its next commits with s (git's gpg.format=ssh,
// which runs ssh-keygen -Y sign); a zero signer stops signing.
func signWith(w *gitWork, s signer) {
	if s.key == "" {
		w.git("config", "commit.gpgsign", "false")
		return
	}
	w.git("config", "gpg.format", "ssh")
	w.git("config", "user.signingkey", s.key)
	w.git("config", "commit.gpgsign", "true")
}

// TestE2ETrust_OnlySignedCommitsDeploy: with verify on, a signed commit
// deploys; an unsigned one and one signed by an unknown key are refused
// (outcome untrusted naming the commit, its author and the key seen, one
// deploy_refused alert each, no host touched, the signed revision keeps
// serving under load); the next signed commit deploys; adding the unknown
// key to allowed_signers (no restart) lets its commit deploy.
func TestE2ETrust_OnlySignedCommitsDeploy(t *testing.T) {
	l := startLab(t, 3)
	if err := l.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Reset(context.Background()) })
	ada, mallory := newSigner(t, "ada"), newSigner(t, "mallory")
	allowed := filepath.Join(t.TempDir(), "allowed_signers")
	writeAllowed := func(ss ...signer) {
		var b strings.Builder
		b.WriteString("# who may deploy\n")
		for _, s := range ss {
			fmt.Fprintf(&b, "ada@example.com namespaces=\"git\" %s\n", s.pub)
		}
		if err := os.WriteFile(allowed, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeAllowed(ada)
	repo, w := sshRemote(t, l) // real git over SSH
	signWith(w, ada)
	w.commit(deployYML(t, "v1"), "v1")
	alerts := newAlertSink(t)
	d := startServe(t, l, serveOpts{repo: repo, sshKey: l.Identity, knownHosts: l.KnownHosts, alertURL: alerts.URL, poll: "1s",
		appExtra: "    verify: {mode: head, ssh_allowed_signers: " + allowed + "}\n"})
	waitServing(t, "v1", 90*time.Second)
	d.waitIdle("succeeded")
	ld := startLoad(webAddrs)

	refused := func(sha, why string) {
		t.Helper()
		waitFor(t, 30*time.Second, "commit "+sha[:12]+" refused", func() bool {
			st := d.status("testapp")
			return st["revision"] == sha && st["last_outcome"] == "untrusted"
		})
		time.Sleep(3 * time.Second) // three polls: not retried, not alerted again
		msg, _ := d.status("testapp")["last_error"].(string)
		for _, want := range []string{sha[:12], "Ada <ada@example.com>", why} {
			if !strings.Contains(msg, want) {
				t.Errorf("the refusal %q does not say %q", msg, want)
			}
		}
		if n := alerts.count("event", "deploy_refused", "revision", sha); n != 1 {
			t.Errorf("%d deploy_refused alerts for %s, want 1: %s", n, sha[:12], alerts)
		}
		for _, addr := range webAddrs {
			if got := get(t, addr); !strings.HasPrefix(got, "v1 ") {
				t.Fatalf("%s serves %q after an untrusted commit", addr, got)
			}
		}
	}
	signWith(w, signer{})
	refused(w.commit(deployYML(t, "v2"), "unsigned"), "unsigned")
	signWith(w, mallory)
	refused(w.commit(deployYML(t, "v2")+"# by mallory\n", "signed by a stranger"), mallory.fingerprint)

	signWith(w, ada)
	w.commit(deployYML(t, "v2"), "signed again")
	waitServing(t, "v2", 60*time.Second)
	d.waitIdle("succeeded")

	// Rotation: mallory's key is trusted from the moment the file says so.
	signWith(w, mallory)
	sha := w.commit(deployYML(t, "v3"), "signed by the new key")
	waitFor(t, 30*time.Second, "the new key's commit refused first", func() bool {
		return d.status("testapp")["last_outcome"] == "untrusted"
	})
	writeAllowed(ada, mallory)
	took := waitServing(t, "v3", 60*time.Second)
	t.Logf("allowed_signers edited → v3 served in %s (no restart)", took.Round(time.Millisecond))
	d.waitIdle("succeeded")
	if st := d.status("testapp"); st["revision"] != sha {
		t.Errorf("revision %v, want %s", st["revision"], sha)
	}
	var passes []struct {
		Outcome, Revision string
	}
	code, body := d.get("/api/v1/apps/testapp/history", "Bearer "+d.token)
	if err := json.Unmarshal(body, &passes); code != http.StatusOK || err != nil {
		t.Fatalf("history: %d %v", code, err)
	}
	untrusted := 0
	for _, p := range passes {
		if p.Outcome == "untrusted" {
			untrusted++
		}
	}
	if untrusted != 3 {
		t.Errorf("%d untrusted passes in the history, want 3", untrusted)
	}
	ld.finish(t, "signed, unsigned, stranger-signed and rotated commits")
}

// denyWindowFor is a deploy window spec (indented for an app) that is
// closed from the start of the current minute until until.
func denyWindowFor(until time.Time) string {
	start := time.Now().UTC().Truncate(time.Minute)
	return fmt.Sprintf("    windows:\n      - {kind: deny, schedule: \"%d %d * * *\", duration: %s, timezone: UTC}\n",
		start.Minute(), start.Hour(), until.Sub(start).Round(time.Second))
}

// restartWith stops the daemon, adds appExtra to the testapp app (and top
// to the top level) of the capstan.yml it started with, and starts it
// again.
func (d *serveProc) restartWith(appExtra, top string) {
	d.t.Helper()
	d.stop()
	if d.baseCfg == nil {
		b, err := os.ReadFile(d.cfg)
		if err != nil {
			d.t.Fatal(err)
		}
		d.baseCfg = b
	}
	cfg := strings.Replace(string(d.baseCfg), "    branch: main\n", "    branch: main\n"+appExtra, 1)
	cfg = strings.Replace(cfg, "apps:\n", top+"apps:\n", 1)
	if err := os.WriteFile(d.cfg, []byte(cfg), 0o600); err != nil {
		d.t.Fatal(err)
	}
	d.start()
}

// TestE2ETrust_DeployWindow: a commit that lands in a closed deny window
// waits (shown as window_closed with when it opens) and deploys once the
// window ends; inside a long window a sync with override=1 by a token with
// the override scope deploys at once and the history says who.
func TestE2ETrust_DeployWindow(t *testing.T) {
	l, w, d, _ := truthLab(t, serveOpts{poll: "1s"})
	_ = l
	ld := startLoad(webAddrs)

	end := time.Now().Add(25 * time.Second)
	d.restartWith(denyWindowFor(end), "")
	w.commit(deployYML(t, "v2"), "v2 inside a deny window")
	waitFor(t, 20*time.Second, "the pass waits for the window", func() bool {
		return d.status("testapp")["last_outcome"] == "window_closed"
	})
	win, _ := d.status("testapp")["window_closed"].(map[string]any)
	opens, err := time.Parse(time.RFC3339Nano, fmt.Sprint(win["opens"]))
	if err != nil || opens.Sub(end).Abs() > time.Second {
		t.Errorf("the wait says it opens at %v (%v), want %v", win["opens"], err, end.UTC())
	}
	if !strings.Contains(fmt.Sprint(win["reason"]), "deny") {
		t.Errorf("the wait's reason: %v", win["reason"])
	}
	waitServing(t, "v2", time.Until(end)+60*time.Second)
	if first := ld.firstOf("v2"); first.Before(end) {
		t.Errorf("v2 answered at %v, before the window closed at %v", first, end)
	} else {
		t.Logf("window opened → v2 first answered %s later", first.Sub(end).Round(time.Millisecond))
	}
	d.waitIdle("succeeded")

	// A long window, and the override.
	d.env = append(d.env, "OPS_TOKEN=ops-token-456")
	d.restartWith(denyWindowFor(time.Now().Add(10*time.Minute)),
		"api_tokens:\n  - {name: ops, token_env: OPS_TOKEN, scopes: [sync, override, read]}\n")
	w.commit(deployYML(t, "v3"), "v3, urgent")
	waitFor(t, 20*time.Second, "v3 waits for the window", func() bool {
		return d.status("testapp")["last_outcome"] == "window_closed"
	})
	if code := d.post("/api/v1/apps/testapp/sync?override=1", nil, map[string]string{"Authorization": "Bearer ops-token-456"}); code != http.StatusAccepted {
		t.Fatalf("override sync: %d", code)
	}
	waitServing(t, "v3", 60*time.Second)
	d.waitIdle("succeeded")
	var passes []struct {
		TriggeredBy string `json:"triggered_by"`
		Override    bool
	}
	_, body := d.get("/api/v1/apps/testapp/history", "Bearer "+d.token)
	if err := json.Unmarshal(body, &passes); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range passes {
		found = found || (p.TriggeredBy == "token:ops" && p.Override)
	}
	if !found {
		t.Errorf("no pass recorded as an override by token:ops: %s", body)
	}
	ld.finish(t, "deploys held by a window, then let through and overridden")
}
