package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

var hostNameRE = regexp.MustCompile(`^lab([1-9][0-9]?)$`)

// Down stops and removes everything Up made: daemons and their containers,
// namespaces, mounts, veths, the bridge, the iptables rule and the lab
// directory. The tools cache is kept. It is safe to call on a lab that is
// partly up or already down.
func Down(ctx context.Context, opts Options) error {
	opts.fill()
	if err := Check(); err != nil {
		return err
	}
	var errs []error
	names := labHostNames(opts.Dir)
	l := newLab(opts.Dir, 0)

	// Stop each dockerd first so it stops its containers, all hosts at once.
	for _, n := range names {
		if pid := readPID(filepath.Join(opts.Dir, "hosts", n, "dockerd.pid")); pid > 0 && alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range names {
		pid := readPID(filepath.Join(opts.Dir, "hosts", n, "dockerd.pid"))
		for pid > 0 && alive(pid) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, n := range names {
		opts.Logf("removing %s", n)
		// Whatever is left: sshd and its sessions, containerd, shims,
		// docker-proxy (in the host's netns) and container processes (in
		// the host's cgroup parent).
		for round := 0; round < 50; round++ {
			pids := cgroupPIDs(n)
			if np, err := netnsPIDs(n); err == nil {
				pids = append(pids, np...)
			}
			live := 0
			for _, pid := range pids {
				if alive(pid) {
					live++
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			if live == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		removeCgroups(n)
		for _, suffix := range []string{".mnt", ".uts"} {
			p := filepath.Join(l.nsDir(), n+suffix)
			if isMountpoint(p) {
				if _, err := runOut(ctx, "umount", p); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if _, err := os.Stat("/run/netns/" + n); err == nil {
			if _, err := runOut(ctx, "ip", "netns", "delete", n); err != nil {
				errs = append(errs, err)
			}
		}
		if linkExists("v" + n) {
			if _, err := runOut(ctx, "ip", "link", "del", "v"+n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if pid := readPID(filepath.Join(opts.Dir, "registry.pid")); pid > 0 && alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 50 && alive(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if linkExists(Bridge) {
		if _, err := runOut(ctx, "ip", "link", "del", Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	rule := []string{"FORWARD", "-i", Bridge, "-o", Bridge, "-j", "ACCEPT"}
	for i := 0; i < 10; i++ {
		if _, err := runOut(ctx, "iptables", append([]string{"-C"}, rule...)...); err != nil {
			break
		}
		if _, err := runOut(ctx, "iptables", append([]string{"-D"}, rule...)...); err != nil {
			errs = append(errs, err)
			break
		}
	}
	if isMountpoint(l.nsDir()) {
		if _, err := runOut(ctx, "umount", l.nsDir()); err != nil {
			errs = append(errs, err)
		}
	}
	// `ip netns add` made /run/netns a mount point; undo it when the lab's
	// namespaces were the only ones.
	if ents, err := os.ReadDir("/run/netns"); err == nil && len(ents) == 0 && isMountpoint("/run/netns") {
		_, _ = runOut(ctx, "umount", "/run/netns")
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(opts.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// labHostNames lists the hosts the lab made, from its directory and from
// the namespaces that exist (a crashed bring-up may have left either).
func labHostNames(dir string) []string {
	seen := map[string]bool{}
	var names []string
	add := func(n string) {
		if hostNameRE.MatchString(n) && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "hosts")); err == nil {
		for _, e := range ents {
			add(e.Name())
		}
	}
	// Namespaces named labN are the lab's only if their mount namespace
	// file is in this lab's directory or the veth is on the lab bridge.
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			n := e.Name()
			if _, err := os.Stat(filepath.Join(dir, "ns", n+".mnt")); err == nil {
				add(n)
				continue
			}
			if master, err := os.Readlink("/sys/class/net/v" + n + "/master"); err == nil && strings.HasSuffix(master, "/"+Bridge) {
				add(n)
			}
		}
	}
	return names
}

// Status describes what of the lab is running.
func Status(ctx context.Context, opts Options) (string, error) {
	opts.fill()
	var b strings.Builder
	names := labHostNames(opts.Dir)
	if len(names) == 0 && !linkExists(Bridge) {
		return "lab is down\n", nil
	}
	state := func(ok bool) string {
		if ok {
			return "running"
		}
		return "STOPPED"
	}
	fmt.Fprintf(&b, "lab %s: bridge %s %s, registry %s %s\n", opts.Dir, Bridge, state(linkExists(Bridge)),
		RegistryAddr, state(pidAlive(filepath.Join(opts.Dir, "registry.pid"))))
	for _, n := range names {
		hd := filepath.Join(opts.Dir, "hosts", n)
		_, nsErr := os.Stat("/run/netns/" + n)
		containers := "?"
		if err := waitDocker(ctx, filepath.Join(hd, "run", "docker.sock"), 0); err == nil {
			var idx int
			fmt.Sscanf(n, "lab%d", &idx)
			args := append(newLab(opts.Dir, 0).nsenterArgs(idx-1), "docker", "ps", "-q")
			if out, err := runOut(ctx, args[0], args[1:]...); err == nil {
				containers = fmt.Sprint(len(strings.Fields(out)))
			}
		}
		fmt.Fprintf(&b, "  %-6s netns %s, dockerd %s, sshd %s, containers running: %s\n", n,
			state(nsErr == nil), state(pidAlive(filepath.Join(hd, "dockerd.pid"))), state(pidAlive(filepath.Join(hd, "sshd.pid"))), containers)
	}
	return b.String(), nil
}
