package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

func init() {
	register(command{name: "render", summary: "print the commands capstan would run on fresh hosts (secrets masked)", run: runRender})
}

func runRender(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "render", "[-c FILE] [-d DEST] [--version V] [--host H] [--json]")
	f := addConfigFlags(fs, e)
	host := fs.String("host", "", "render only this host")
	asJSON := fs.Bool("json", false, "print the per-host plans as JSON")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("render takes no arguments")
	}
	key, ephemeral, err := fingerprintKey(e)
	if err != nil {
		return err
	}
	c, err := f.load(ctx, e, key)
	if err != nil {
		return err
	}
	out, errOut, flush := redacting(e, c)
	defer flush()
	var plans []*kamal.HostPlan
	if *host != "" {
		known := false
		for _, h := range c.AllHosts() {
			known = known || h == *host
		}
		if !known {
			fmt.Fprintf(errOut, "capstan: host %s is not in the configuration (hosts: %v)\n", *host, c.AllHosts())
			return errSilent
		}
		p, err := c.Plan(*host)
		if err != nil {
			return err
		}
		plans = []*kamal.HostPlan{p}
	} else if plans, err = c.Plans(); err != nil {
		return err
	}
	if ephemeral {
		fmt.Fprintln(errOut, "capstan: note: capstan.fingerprint labels use a random key for this run; set CAPSTAN_FINGERPRINT_KEY to reproduce the labels capstan applies")
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(plans)
	}
	return kamal.WriteScript(out, plans)
}
