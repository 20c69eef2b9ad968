package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// runOut runs a command and returns its combined output; a failure
// includes the command and its output.
func runOut(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// runs runs commands in order and stops at the first failure.
func runs(ctx context.Context, cmds ...[]string) error {
	for _, c := range cmds {
		if _, err := runOut(ctx, c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

// mountpoints returns the mount points of the caller's mount namespace.
func mountpoints() map[string]bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	m := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			m[unescapeMount(fields[4])] = true
		}
	}
	return m
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func isMountpoint(p string) bool { return mountpoints()[filepath.Clean(p)] }

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// pidAlive reports whether the pid recorded in path is a live process (not
// a zombie).
func pidAlive(path string) bool {
	pid := readPID(path)
	return pid > 0 && alive(pid)
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// state is the field after the parenthesized comm
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// namespacePIDs lists the processes in host i's network namespace.
func (l *Lab) namespacePIDs(i int) ([]int, error) {
	return netnsPIDs(hostName(i))
}

// netnsPIDs lists processes whose network namespace is /run/netns/name,
// like `ip netns pids`.
func netnsPIDs(name string) ([]int, error) {
	var want syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+name, &want); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil {
			continue
		}
		if st.Ino == want.Ino && st.Dev == want.Dev {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// cgroupPIDs lists processes in any cgroup under /<name> (the per-host
// cgroup parent of its containers), in every mounted hierarchy.
func cgroupPIDs(name string) []int {
	seen := map[int]bool{}
	var pids []int
	for _, root := range cgroupRoots() {
		_ = filepath.Walk(filepath.Join(root, name), func(p string, info os.FileInfo, err error) error {
			if err != nil || !info.IsDir() {
				return nil
			}
			for _, f := range []string{"cgroup.procs", "tasks"} {
				b, err := os.ReadFile(filepath.Join(p, f))
				if err != nil {
					continue
				}
				for _, s := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(s); err == nil && !seen[pid] {
						seen[pid] = true
						pids = append(pids, pid)
					}
				}
			}
			return nil
		})
	}
	return pids
}

// removeCgroups removes the (empty) cgroup directories under /<name>,
// deepest first.
func removeCgroups(name string) {
	for _, root := range cgroupRoots() {
		var dirs []string
		_ = filepath.Walk(filepath.Join(root, name), func(p string, info os.FileInfo, err error) error {
			if err == nil && info.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
	}
}

func cgroupRoots() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var roots []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		_, after, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fs := strings.Fields(after)
		if len(fs) > 0 && (fs[0] == "cgroup" || fs[0] == "cgroup2") {
			roots = append(roots, unescapeMount(strings.Fields(line)[4]))
		}
	}
	return roots
}
