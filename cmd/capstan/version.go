package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at link time: -ldflags "-X main.version=v0.1.0 -X main.commit=abc123".
var (
	version = "dev"
	commit  = ""
)

func init() {
	register(command{name: "version", summary: "print version, commit and Go version", run: runVersion})
}

func runVersion(_ context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "version", "")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	c := commit
	dirty := false
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if c == "" {
					c = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if c == "" {
		c = "unknown"
	} else if dirty {
		c += "-dirty"
	}
	fmt.Fprintf(e.stdout, "capstan %s\ncommit %s\n%s %s/%s\n", version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
