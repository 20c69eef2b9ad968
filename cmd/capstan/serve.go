package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/internal/daemon"
	"github.com/capstan-dev/capstan/internal/redact"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/kamal"
)

func init() {
	register(command{name: "serve", summary: "run the GitOps daemon: watch git, deploy on merge, sweep for drift", run: runServe})
}

func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "serve", "--config capstan.yml")
	cfgPath := fs.String("config", envOr("CAPSTAN_CONFIG", "capstan.yml"), "daemon configuration (env CAPSTAN_CONFIG)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	cfg, err := daemon.LoadConfig(*cfgPath, e.getenv)
	if err != nil {
		var ce daemon.ConfigErrors
		if errors.As(err, &ce) {
			for _, l := range ce {
				fmt.Fprintln(e.stderr, l)
			}
			return errSilent
		}
		return err
	}
	deps, err := daemonDeps(e, cfg)
	if err != nil {
		return err
	}
	d, err := daemon.New(ctx, cfg, deps)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Run(ctx)
}

// daemonDeps wires the daemon's SSH side: pools and Apps as plan and apply
// build them, with capstan.yml's ssh block over the global flags.
func daemonDeps(e *env, cfg *daemon.Config) (daemon.Deps, error) {
	key, err := stateKey(e, cfg.StateDir)
	if err != nil {
		return daemon.Deps{}, err
	}
	ee := *e
	if cfg.SSH.KnownHosts != "" {
		ee.knownHosts = cfg.SSH.KnownHosts
	}
	if cfg.SSH.Identity != "" {
		ee.identity = cfg.SSH.Identity
	}
	// One bound on connection setups for every app's pool: many apps on
	// the same hosts do not multiply the handshakes in flight.
	dials := hostexec.NewDialLimit(0)
	return daemon.Deps{
		Log: e.log, Getenv: e.getenv, LookupEnv: e.lookup, Key: key, PoolKey: poolKey,
		NewPool: func(c *kamal.Config) (*hostexec.Pool, *redact.Redactor, error) {
			return newPool(&ee, c, poolOptions{AcceptNew: cfg.SSH.AcceptNew, NoRepoKeyFiles: true, Dials: dials,
				ConnectTimeout: time.Duration(cfg.SSH.ConnectTimeout), CommandTimeout: time.Duration(cfg.SSH.CommandTimeout)})
		},
		NewApp: func(c *kamal.Config, pool *hostexec.Pool, red *redact.Redactor) (*reconcile.App, error) {
			return newApp(&ee, c, pool, red)
		},
	}, nil
}
