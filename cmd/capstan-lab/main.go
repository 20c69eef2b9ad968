// Command capstan-lab brings up, inspects and removes the test lab: real
// Docker hosts in network namespaces on this machine (see internal/lab).
//
//	capstan-lab up [-hosts N]   bring the lab up (idempotent)
//	capstan-lab status          what is running
//	capstan-lab down            remove everything the lab made
//	capstan-lab reset           remove every container and ~/.kamal from the hosts
//	capstan-lab env             shell variables describing the lab
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/capstan-dev/capstan/internal/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "capstan-lab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("capstan-lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hosts := fs.Int("hosts", lab.DefaultHosts, "number of hosts for up")
	dir := fs.String("dir", "", "lab directory (default $CAPSTAN_LAB_DIR or "+lab.DefaultDir+")")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: capstan-lab [-hosts N] [-dir DIR] up|down|status|reset|env")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("want one command")
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "lab: "+format+"\n", a...) }
	opts := lab.Options{Dir: *dir, Hosts: *hosts, Logf: logf}
	switch fs.Arg(0) {
	case "up":
		start := time.Now()
		l, err := lab.Up(ctx, opts)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "lab up in %.1fs\n%s", time.Since(start).Seconds(), l.Describe())
	case "down":
		start := time.Now()
		if err := lab.Down(ctx, opts); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "lab down in %.1fs\n", time.Since(start).Seconds())
	case "reset":
		l, err := lab.Up(ctx, opts)
		if err != nil {
			return err
		}
		if err := l.Reset(ctx); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "lab hosts reset: no containers, no ~/.kamal")
	case "status":
		s, err := lab.Status(ctx, opts)
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, s)
	case "env":
		l, err := lab.Up(ctx, opts)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "LAB_DIR=%s\nLAB_REGISTRY=%s\nLAB_KNOWN_HOSTS=%s\nLAB_IDENTITY=%s\n", l.Dir, l.RegistryAddr, l.KnownHosts, l.Identity)
		for i, h := range l.Hosts {
			fmt.Fprintf(stdout, "LAB_HOST%d=%s\n", i+1, h.Addr)
		}
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", fs.Arg(0))
	}
	return nil
}
