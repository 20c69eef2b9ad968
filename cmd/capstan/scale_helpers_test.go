package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/simfleet"
)

// scaleSecret is the registry password the scale apps' secrets resolve to.
const scaleSecret = "scale-registry-password-1"

// scaleDeployYML is a one-role app on the fleet's hosts, routed by
// kamal-proxy, deploying version with boot.limit, from the fleet's
// registry.
func scaleDeployYML(service string, f *simfleet.Fleet, hosts []string, version, limit string) string {
	boot := ""
	if limit != "" {
		boot = "boot:\n  limit: " + limit + "\n"
	}
	return f.DeployYML(service, hosts, version, boot, "  bake: 0\n")
}

// procRun is what one capstan process cost.
type procRun struct {
	out        string
	err        error
	wall       time.Duration
	cpu        time.Duration // user + system
	maxRSSKiB  int64         // peak resident set (VmHWM), from rusage
	threadsMax int           // OS threads, sampled from /proc
	// goroutinesMax is go_goroutines at most, sampled from /metrics
	// (capstan serve only).
	goroutinesMax int
}

// runCapstan runs the binary with args in dir and measures it.
func runCapstan(tb testing.TB, dir string, env []string, args ...string) procRun {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, capstanBinary(tb), append([]string{"--log-level", "warn", "--log-format", "json"}, args...)...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	stop := make(chan struct{})
	threads := make(chan int)
	go func() { threads <- sampleThreads(cmd.Process.Pid, stop) }()
	err := cmd.Wait()
	r := procRun{out: out.String(), err: err, wall: time.Since(start)}
	close(stop)
	r.threadsMax = <-threads
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSSKiB = ru.Maxrss
	}
	return r
}

// sampleThreads polls /proc/pid/status every 20 ms until stop and returns
// the most threads seen.
func sampleThreads(pid int, stop <-chan struct{}) int {
	most := 0
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if n, ok := procStatus(pid)["Threads"]; ok {
			most = max(most, int(n))
		}
		select {
		case <-stop:
			return most
		case <-t.C:
		}
	}
}

// procStatus reads the numeric fields of /proc/pid/status (kB values in
// kB); empty when the process is gone.
func procStatus(pid int) map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		if f := strings.Fields(v); len(f) > 0 {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				out[k] = n
			}
		}
	}
	return out
}

// mib formats KiB as MiB.
func mib(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }
