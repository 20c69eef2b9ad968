package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/capstan-dev/capstan/reconcile"
)

func init() {
	register(command{name: "details", summary: "the app's containers on each host: role, version, state, health, uptime, image digest, route", run: runDetails})
}

func runDetails(ctx context.Context, e *env, args []string) error {
	var f deployFlags
	app, closePool, help, err := openApp(ctx, e, "details", args, &f)
	if help || err != nil {
		return err
	}
	defer closePool()
	hosts, err := app.Details(ctx)
	if err != nil {
		return err
	}
	if f.json {
		err = writeJSON(e.stdout, hosts)
	} else {
		err = writeDetails(e.stdout, hosts)
	}
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if h.Error != "" {
			return errSilent
		}
	}
	return nil
}

// writeDetails prints one table per host.
func writeDetails(w io.Writer, hosts []reconcile.HostDetails) error {
	for _, h := range hosts {
		fmt.Fprintf(w, "%s:\n", h.Host)
		if h.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", h.Error)
		}
		if len(h.Containers) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tKIND\tROLE\tVERSION\tSTATE\tHEALTH\tUPTIME\tDIGEST\tROUTE")
		for _, c := range h.Containers {
			state := c.State
			if c.Current && c.Kind == reconcile.KindApp {
				state += " (current)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Kind, dash(c.Role), c.Version, state,
				dash(c.Health), dash(c.Uptime), dash(shortDigest(c.Digests)), dash(c.Route))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// shortDigest is the first repository digest's sha256 cut to 12 hex
// digits ("sha256:0123456789ab"); "" without one.
func shortDigest(ds []string) string {
	if len(ds) == 0 {
		return ""
	}
	_, d, _ := strings.Cut(ds[0], "@")
	return d[:min(len(d), len("sha256:")+12)]
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
