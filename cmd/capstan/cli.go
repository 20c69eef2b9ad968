package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/capstan-dev/capstan/internal/failpoint"
)

// Exit codes, decided in one place (exitCode).
const (
	exitOK       = 0
	exitFailure  = 1 // the command ran and failed (invalid config, failed deploy, …)
	exitUsage    = 2 // bad flags or arguments
	exitCanceled = 130
)

// errUsage marks an error caused by how the command was invoked.
var errUsage = errors.New("usage")

// usageError wraps a message so exitCode maps it to exitUsage.
func usageError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// exitStatusError makes capstan exit with code, printing nothing: the
// status of a remote command (capstan exec), whose output said the rest.
type exitStatusError struct{ code int }

func (e *exitStatusError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// errSilent is returned by commands that already printed their failure
// (for example the list of validation errors) and only need exit status 1.
var errSilent = errors.New("failed")

// env is what every subcommand gets: output streams, the logger and the
// global options parsed before the subcommand name.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	log            *slog.Logger
	logLevel       slog.Level
	getenv         func(string) string
	// lookupEnv tells a variable set to "" from an unset one (Ruby's ENV
	// does); nil: getenv, with "" as unset.
	lookupEnv func(string) (string, bool)

	// knownHosts and identity are the global --known-hosts and --identity
	// flags (or CAPSTAN_KNOWN_HOSTS / CAPSTAN_IDENTITY); empty means the
	// OpenSSH defaults.
	knownHosts, identity string
}

// lookup reads variable k: its value and whether it is set.
func (e *env) lookup(k string) (string, bool) {
	if e.lookupEnv != nil {
		return e.lookupEnv(k)
	}
	v := e.getenv(k)
	return v, v != ""
}

// command is one subcommand. run receives the arguments after its name.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

var commands = map[string]command{}

// register adds a subcommand; each command file calls it from init.
func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("capstan: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// run parses the global flags, sets up logging and dispatches to a
// subcommand. It is main without the process: tests call it directly.
// Standard input is os.Stdin.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runStdio(ctx, args, os.Stdin, stdout, stderr)
}

// runStdio is run with standard input stdin (capstan exec -i reads it).
func runStdio(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("capstan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	knownHosts := fs.String("known-hosts", os.Getenv("CAPSTAN_KNOWN_HOSTS"), "OpenSSH known_hosts file for every SSH connection (default ~/.ssh/known_hosts; env CAPSTAN_KNOWN_HOSTS)")
	identity := fs.String("identity", os.Getenv("CAPSTAN_IDENTITY"), "SSH private key for every connection (default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa and the agent; env CAPSTAN_IDENTITY)")
	logFormat := fs.String("log-format", envOr("CAPSTAN_LOG_FORMAT", "auto"), "log format: auto (text on a terminal, JSON otherwise), text or json")
	logLevel := fs.String("log-level", envOr("CAPSTAN_LOG_LEVEL", "info"), "log level: debug, info, warn or error")
	fs.Usage = func() { printHelp(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError("%v", err)
	}
	logger, level, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return usageError("%v", err)
	}
	slog.SetDefault(logger)
	if err := warnFailpoints(logger); err != nil {
		return usageError("%v", err)
	}
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, log: logger, logLevel: level, getenv: os.Getenv, lookupEnv: os.LookupEnv, knownHosts: *knownHosts, identity: *identity}

	rest := fs.Args()
	if len(rest) == 0 {
		printHelp(stderr, fs)
		return usageError("no command given")
	}
	name := rest[0]
	if name == "help" || name == "-h" || name == "--help" {
		if len(rest) > 1 {
			if c, ok := commands[rest[1]]; ok {
				return c.run(ctx, e, []string{"-h"})
			}
		}
		printHelp(stdout, fs)
		return nil
	}
	c, ok := commands[name]
	if !ok {
		return usageError("unknown command %q (run 'capstan help')", name)
	}
	return c.run(ctx, e, rest[1:])
}

// warnFailpoints logs the failpoints CAPSTAN_FAILPOINTS armed (for tests
// only), and returns its error when it is malformed.
func warnFailpoints(log *slog.Logger) error {
	points, err := failpoint.Check()
	if len(points) > 0 {
		log.Warn(failpoint.EnvVar+" is set: capstan will fail on purpose at these points (tests only)", "points", points)
	}
	return err
}

func printHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "capstan: GitOps reconciler for Kamal deployments on plain Docker hosts\n\n")
	fmt.Fprintf(w, "Usage: capstan [global flags] COMMAND [flags]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "  %-10s %s\n", "help", "show this help, or 'help COMMAND' for a command's flags")
	fmt.Fprintf(w, "\nGlobal flags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// exitCode maps an error returned by run to the process exit status and
// prints it. It is the only place that decides exit codes.
func exitCode(err error, stderr io.Writer) int {
	var status *exitStatusError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &status):
		return status.code
	case errors.Is(err, errSilent):
		return exitFailure
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "capstan: interrupted")
		return exitCanceled
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "capstan: %s\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return exitUsage
	default:
		fmt.Fprintf(stderr, "capstan: %v\n", err)
		return exitFailure
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// newFlagSet returns a flag set for a subcommand that reports errors the
// way run expects.
func newFlagSet(e *env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("capstan "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: capstan %s %s\n\nFlags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses a subcommand's flags; -h is not an error.
func parseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, usageError("%v", err)
	}
	return false, nil
}

// parseInterleaved parses flags that may come before or after positional
// arguments ("history APP --json") and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) (positional []string, help bool, err error) {
	for {
		if help, err := parseFlags(fs, args); help || err != nil {
			return nil, help, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, false, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}
