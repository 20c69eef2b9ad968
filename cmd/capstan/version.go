package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set at link time: -ldflags "-X main.version=v0.1.0 -X main.commit=abc123".
// Left as they are, capstan version reports what the Go toolchain embedded.
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
	bi, _ := debug.ReadBuildInfo()
	buildVersion(version, commit, bi).write(e.stdout)
	return nil
}

// build is what capstan version prints.
type build struct {
	Version  string // release version, "dev" when unknown
	Commit   string // VCS revision, "unknown" when unknown
	Time     string // commit time (RFC 3339), "" when unknown
	Modified bool   // built from a work tree with uncommitted changes
}

// buildVersion combines the link-time version and commit with what the Go
// toolchain embedded in bi (nil when the binary has no build info): the
// module version (a tag or a pseudo-version, not "(devel)") when no version
// was linked in, and the vcs.revision, vcs.time and vcs.modified settings.
// A linked-in value wins over an embedded one.
func buildVersion(ldVersion, ldCommit string, bi *debug.BuildInfo) build {
	b := build{Version: ldVersion, Commit: ldCommit}
	if bi != nil {
		if (b.Version == "" || b.Version == "dev") && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

// write prints b as three lines: version, commit (with "-dirty" and the
// commit time when known), Go version and platform.
func (b build) write(w io.Writer) {
	c := b.Commit
	if b.Modified {
		c += "-dirty"
	}
	if b.Time != "" {
		c += " (" + b.Time + ")"
	}
	fmt.Fprintf(w, "capstan %s\ncommit %s\n%s %s/%s\n", b.Version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
