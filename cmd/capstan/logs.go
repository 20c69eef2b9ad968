package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/capstan-dev/capstan/reconcile"
)

func init() {
	register(command{name: "logs", summary: "the logs of the app's current containers on every host, merged and masked (-f follows through redeploys)", run: runLogs})
}

// defaultLogLines is -n when neither it, --since nor --grep is given (as
// kamal app logs).
const defaultLogLines = 100

// logsFlags are logs' own flags.
type logsFlags struct {
	roles, hosts string
	lines        int
	since        time.Duration
	follow       bool
	grep         string
	timestamps   bool
}

func runLogs(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "logs", "[-c FILE] [-d DEST] [-r ROLE,…] [--hosts H,…] [-n LINES] [--since 10m] [-f] [--grep RE] [-T]")
	var f deployFlags
	f.configFlags = addConfigFlags(fs, e)
	fs.StringVar(&f.stateDir, "state-dir", defaultStateDir(e), "capstan's state directory; holds the fingerprint key the daemon shares (env CAPSTAN_STATE_DIR)")
	var l logsFlags
	for _, n := range []string{"r", "roles"} {
		fs.StringVar(&l.roles, n, "", "only these roles (comma-separated)")
	}
	fs.StringVar(&l.hosts, "hosts", "", "only these hosts (comma-separated, as in deploy.yml)")
	for _, n := range []string{"n", "lines"} {
		fs.IntVar(&l.lines, n, -1, fmt.Sprintf("last lines of each container; 0: all (default %d, all with --since or --grep)", defaultLogLines))
	}
	fs.DurationVar(&l.since, "since", 0, "only the lines of this last duration (10m, 1h30m)")
	for _, n := range []string{"f", "follow"} {
		fs.BoolVar(&l.follow, n, false, "stream new lines until interrupted, following each role's new container after a redeploy")
	}
	fs.StringVar(&l.grep, "grep", "", "only the lines matching this Go regular expression (matched after masking)")
	for _, n := range []string{"T", "timestamps"} {
		fs.BoolVar(&l.timestamps, n, false, "show Docker's timestamp of each line")
	}
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	o, err := l.options(e)
	if err != nil {
		return err
	}
	app, closePool, err := loadApp(ctx, e, &f)
	if err != nil {
		return err
	}
	defer closePool()
	err = app.Logs(ctx, o, e.stdout)
	if errors.Is(err, reconcile.ErrUnknownTarget) {
		return usageError("%v", err)
	}
	if l.follow && errors.Is(err, context.Canceled) {
		return nil // Ctrl-C is how -f ends
	}
	return err
}

// options turns the flags into reconcile.LogOptions; unreadable hosts are
// reported on e.stderr.
func (l *logsFlags) options(e *env) (reconcile.LogOptions, error) {
	o := reconcile.LogOptions{Roles: reconcile.SplitList(l.roles), Hosts: reconcile.SplitList(l.hosts), Lines: l.lines, Since: l.since,
		Follow: l.follow, Timestamps: l.timestamps}
	if l.since < 0 {
		return o, usageError("--since must be positive")
	}
	if l.lines < 0 {
		o.Lines = defaultLogLines
		if l.since > 0 || l.grep != "" {
			o.Lines = 0
		}
	}
	if l.grep != "" {
		re, err := regexp.Compile(l.grep)
		if err != nil {
			return o, usageError("--grep: %v", err)
		}
		o.Grep = re
	}
	o.Warn = func(host string, err error) { fmt.Fprintf(e.stderr, "capstan: %s: %v\n", host, err) }
	return o, nil
}
