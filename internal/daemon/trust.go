package daemon

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/capstan-dev/capstan/gitwatch/verify"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/state"
)

// VerifyConfig is an app's verify block: which commits may deploy.
type VerifyConfig struct {
	// Mode is head (the commit to deploy must be trusted) or all (every
	// commit since the last deployed one).
	Mode              string `yaml:"mode"`
	SSHAllowedSigners string `yaml:"ssh_allowed_signers"`
	GPGKeys           string `yaml:"gpg_keys"`
}

// Verify modes.
const (
	VerifyHead = "head"
	VerifyAll  = "all"
)

// maxVerifyRange bounds the commits verify mode all checks in one pass.
const maxVerifyRange = 200

// trustInterval is how often the trust files are checked for changes.
var trustInterval = 5 * time.Second

// checkTrust validates an app's verify block.
func checkVerify(a *AppConfig, p string, bad func(keyPath, format string, args ...any)) {
	if v := a.Verify; v != nil {
		switch v.Mode {
		case "":
			v.Mode = VerifyHead
		case VerifyHead, VerifyAll:
		default:
			bad(p+".verify.mode", "%q: want head or all", v.Mode)
		}
		if v.SSHAllowedSigners == "" && v.GPGKeys == "" {
			bad(p+".verify", "ssh_allowed_signers or gpg_keys is required")
		} else if _, err := verify.New(verify.Policy{AllowedSigners: v.SSHAllowedSigners, GPGKeys: v.GPGKeys}); err != nil {
			bad(p+".verify", "%v", err)
		}
	}
}

// trust is an app's verifier and the last revision it let deploy (the
// base of verify mode all).
type trust struct {
	mode     string
	verifier *verify.Verifier
	base     string
}

// newTrust builds the app's verifier (nil without a verify block) and
// seeds the base with the last revision that deployed.
func (d *Daemon) newTrust(ac AppConfig) (*trust, error) {
	if ac.Verify == nil {
		return nil, nil
	}
	base := ""
	if passes, err := d.store.History(context.Background(), ac.Name, 100); err == nil {
		for _, p := range passes {
			if p.Outcome == state.OutcomeSucceeded || p.Outcome == state.OutcomeNoop || p.Outcome == reconcile.OutcomePartial {
				base = p.Revision
				break
			}
		}
	}
	return d.newTrustFrom(ac, base)
}

// newTrustFrom builds the app's verifier with base as the last revision
// let through.
func (d *Daemon) newTrustFrom(ac AppConfig, base string) (*trust, error) {
	v, err := verify.New(verify.Policy{AllowedSigners: ac.Verify.SSHAllowedSigners, GPGKeys: ac.Verify.GPGKeys})
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	return &trust{mode: ac.Verify.Mode, verifier: v, base: base}, nil
}

// check vets rev: in mode head its commit, in mode all every commit since
// the last one let through. Anything it cannot read is refused too.
func (t *trust) check(_ context.Context, rev reconcile.Revision) error {
	repo, err := git.PlainOpen(rev.Dir)
	if err != nil {
		return fmt.Errorf("%w: commit %s cannot be read to verify it: %v", reconcile.ErrUntrusted, rev.SHA[:min(12, len(rev.SHA))], err)
	}
	var base plumbing.Hash
	if t.mode == VerifyAll && t.base != "" && t.base != rev.SHA {
		base = plumbing.NewHash(t.base)
	}
	results, err := t.verifier.CheckRange(repo, base, plumbing.NewHash(rev.SHA), maxVerifyRange)
	if err != nil {
		return fmt.Errorf("%w: %v", reconcile.ErrUntrusted, err)
	}
	for _, r := range results {
		if !r.Trusted {
			return fmt.Errorf("%w: %s", reconcile.ErrUntrusted, r)
		}
	}
	t.base = rev.SHA
	return nil
}

// watchTrust reloads the trust files on SIGHUP and when they change; a
// change asks each app for a forced pass, so a head refused before is
// verified again with the new keys.
func (d *Daemon) watchTrust(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(trustInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			d.log.Info("SIGHUP: reloading the trust files")
		case <-tick.C:
		}
		for _, name := range d.order {
			r := d.apps[name]
			if r.trust == nil {
				continue
			}
			changed, err := r.trust.verifier.Reload()
			if err != nil {
				d.log.Error("trust files unreadable; keeping the keys loaded before", "app", name, "err", err)
				continue
			}
			if changed {
				d.log.Info("trust files changed; verifying the head again", "app", name)
				d.request(r, reconcile.Request{Kind: reconcile.TriggerManual, By: "trust-reload", Force: true})
			}
		}
	}
}
