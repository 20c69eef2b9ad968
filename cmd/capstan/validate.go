package main

import (
	"context"
	"fmt"
	"strings"
)

func init() {
	register(command{name: "validate", summary: "check a Kamal deploy.yml (+ destination and secrets) the way Kamal would", run: runValidate})
}

func runValidate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "validate", "[-c FILE] [-d DEST] [--version V] [--no-secrets]")
	f := addConfigFlags(fs, e)
	fs.BoolVar(&f.noSecrets, "no-secrets", false, "check the structure only, without reading the secrets files (like Kamal's config)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("validate takes no arguments")
	}
	c, err := f.load(ctx, e, nil)
	if err != nil {
		return err
	}
	out, _, flush := redacting(e, c)
	defer flush()
	if f.noSecrets {
		fmt.Fprintf(out, "%s: valid (secrets not checked: --no-secrets)\n", strings.Join(c.Files, " + "))
	} else {
		fmt.Fprintf(out, "%s: valid\n", strings.Join(c.Files, " + "))
	}
	for _, name := range c.BlankSecrets() {
		fmt.Fprintf(e.stderr, "warning: secret %s is blank (Kamal warns too; a bare %s line in a secrets file sets it to \"\")\n", name, name)
	}
	for _, name := range c.ShortSecrets() {
		fmt.Fprintf(e.stderr, "warning: %s\n", shortSecretWarning(name))
	}
	return c.WriteSummary(out)
}
