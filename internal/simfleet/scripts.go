package simfleet

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// A scriptKind recognises one of the shell scripts capstan sends by text
// it cannot do without, and does what the script does to the host.
type scriptKind struct {
	name  string
	marks []string // every one must be in the script
	run   func(x *cmdCtx, args []string) int
}

// scripts are tried in order; the first whose marks all match runs. The
// table is filled at init: its entries reach back into cmdCtx.run.
var scripts []scriptKind

func init() {
	scripts = []scriptKind{
		{"haproxy boot", []string{`docker container inspect --format '{{.State.Running}}' "$name"`, `cat "$cfg"`}, (*cmdCtx).haproxyBoot},
		{"observe", []string{`docker ps -a`, `docker network inspect kamal --format "$4"`, `"$3/details"`}, (*cmdCtx).observe},
		{"lock", []string{`mkdir "$1"`, `cat > "$1/details"`}, (*cmdCtx).lock},
		{"lock read", []string{`cat "$1/details" 2>/dev/null || true`}, func(x *cmdCtx, args []string) int {
			if len(args) == 1 {
				x.h.f.stats.observed(Observation{Host: x.h.addr, LockDir: args[0], At: time.Now()})
				content, _ := x.h.File(args[0] + "/details")
				io.WriteString(x.out, content)
			}
			return 0
		}},
		{"audit", []string{`mkdir -p .kamal && cat >> "$1"`}, func(x *cmdCtx, args []string) int {
			if len(args) != 1 {
				return x.unknown()
			}
			b, _ := io.ReadAll(x.stdin)
			x.h.writeFile(args[0], string(b), true)
			return 0
		}},
		{"create", []string{`docker rename "$clash" "$renamed"`, `"$@"`}, (*cmdCtx).createScript},
		{"pull", []string{`docker image inspect --format "$fmt" "$img"`, `docker pull --quiet "$img"`}, (*cmdCtx).pullScript},
		{"start", []string{`docker start "$2" >/dev/null && docker inspect --type container --format "$1" "$2"`}, func(x *cmdCtx, args []string) int {
			if len(args) != 2 {
				return x.unknown()
			}
			if code := x.docker([]string{"start", args[1]}); code != 0 {
				return code
			}
			return x.inspect([]string{"--type", "container", "--format", args[0], args[1]}, false)
		}},
		// capstan's check-then-create under a lock directory (one host's
		// commands run one at a time here, so the lock is not modelled).
		{"network", []string{`lock=".kamal/network-$1.lock"`, `docker network inspect "$1" >/dev/null 2>&1 || docker network create "$1" 2>&1`}, func(x *cmdCtx, args []string) int {
			if len(args) != 1 {
				return x.unknown()
			}
			_ = x.networkCreate(args) // exists already: nothing to do
			return 0
		}},
		{"login", []string{`docker login "$1" -u "$2" --password-stdin`}, func(x *cmdCtx, args []string) int {
			return x.docker([]string{"login"})
		}},
		{"stop and remove", []string{`docker stop "$1" >/dev/null && docker rm "$1"`}, func(x *cmdCtx, args []string) int {
			if len(args) != 1 {
				return x.unknown()
			}
			if code := x.docker([]string{"stop", args[0]}); code != 0 {
				return code
			}
			return x.docker([]string{"rm", args[0]})
		}},
		{"logs", []string{`docker logs`}, func(x *cmdCtx, args []string) int { return x.docker([]string{"logs"}) }},
		{"upload", []string{`mkdir -p -- "$1"`, `cat > "$2"`, `mv -f -- "$2" "$4"`}, func(x *cmdCtx, args []string) int {
			if len(args) != 4 {
				return x.unknown()
			}
			b, _ := io.ReadAll(x.stdin)
			x.h.writeFile(args[3], string(b), false)
			return 0
		}},
		{"write file", []string{`cat > "$1.tmp" && mv -f -- "$1.tmp" "$1"`}, func(x *cmdCtx, args []string) int {
			if len(args) != 1 {
				return x.unknown()
			}
			b, _ := io.ReadAll(x.stdin)
			x.h.writeFile(args[0], string(b), false)
			return 0
		}},
		{"kill run", []string{`/proc/[0-9]*`, `CAPSTAN_RUN=`}, func(*cmdCtx, []string) int { return 0 }},
		{"evict", []string{`docker image rm "$img"`}, (*cmdCtx).evictScript},
		{"job", []string{`"$@" 2>&1`}, func(x *cmdCtx, args []string) int {
			if len(args) == 0 {
				return x.unknown()
			}
			return x.run(args)
		}},
	}
}

// script runs `sh -c text $0 args...`.
func (x *cmdCtx) script(text string, _ []string, args []string) int {
	for _, s := range scripts {
		if containsAll(text, s.marks) {
			x.count(s.name)
			return s.run(x, args)
		}
	}
	return x.unknown()
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// observe: every container (docker ps with the format $1, newest first),
// the marker $2, home, DOCKER_HOST and DOCKER_CONTEXT (unset), the kamal
// network's members with format $4, the marker, and the lock details of
// directory $3.
func (x *cmdCtx) observe(args []string) int {
	if len(args) != 4 {
		return x.unknown()
	}
	h := x.h
	h.f.stats.observed(Observation{Host: h.addr, LockDir: args[2], At: time.Now()})
	var b strings.Builder
	h.mu.Lock()
	for i := len(h.state.containers) - 1; i >= 0; i-- {
		line, err := render(args[0], h.state.containers[i].psRow())
		if err != nil {
			h.mu.Unlock()
			return x.fail(1, "template parsing error: "+err.Error())
		}
		b.WriteString(line + "\n")
	}
	fmt.Fprintf(&b, "%s\n%s\n\n\n", args[1], Home)
	if _, ok := h.state.networks["kamal"]; ok {
		out, err := render(args[3], h.state.networkView("kamal"))
		if err != nil {
			h.mu.Unlock()
			return x.fail(1, "template parsing error: "+err.Error())
		}
		b.WriteString(out + "\n")
	}
	b.WriteString(args[1] + "\n")
	b.WriteString(h.state.files[abs(args[2]+"/details")])
	h.mu.Unlock()
	io.WriteString(x.out, b.String())
	return 0
}

// lock: mkdir -p .kamal; mkdir $1 (exit 3 when it exists); details from
// stdin.
func (x *cmdCtx) lock(args []string) int {
	if len(args) != 1 {
		return x.unknown()
	}
	h := x.h
	h.mu.Lock()
	dir := abs(args[0])
	if h.state.dirs[dir] {
		h.mu.Unlock()
		return 3
	}
	h.state.mkdirAll(dir)
	h.mu.Unlock()
	b, _ := io.ReadAll(x.stdin)
	h.writeFile(args[0]+"/details", string(b), false)
	return 0
}

// createScript: clash=$1 renamed=$2 envf=$3 ndirs=$4, then ndirs
// directories, then the docker create argv; the env file comes on stdin.
func (x *cmdCtx) createScript(args []string) int {
	if len(args) < 4 {
		return x.unknown()
	}
	clash, renamed, envf := args[0], args[1], args[2]
	n, err := strconv.Atoi(args[3])
	if err != nil || len(args) < 4+n+1 {
		return x.unknown()
	}
	if clash != "" {
		if code := x.rename(clash, renamed); code != 0 {
			return code
		}
	}
	x.h.mu.Lock()
	for _, d := range args[4 : 4+n] {
		x.h.state.mkdirAll(d)
	}
	x.h.mu.Unlock()
	if envf != "" {
		b, _ := io.ReadAll(x.stdin)
		x.h.writeFile(envf, string(b), false)
	}
	return x.run(args[4+n:])
}

// pullScript: img=$1 fmt=$2 digest=$3 server=$4 user=$5 need=$6 warm=$7;
// "present" or "pulled" and the image inspected with fmt (the sim's disks
// are never short).
func (x *cmdCtx) pullScript(args []string) int {
	if len(args) < 5 {
		return x.unknown()
	}
	img, format, digest := args[0], args[1], args[2]
	h := x.h
	inspect := func() (string, bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		im := h.state.image(img)
		if im == nil || (digest != "" && !strings.Contains(im.digest, digest)) {
			return "", false
		}
		out, _ := render(format, im.inspect())
		return out, true
	}
	if out, ok := inspect(); ok {
		io.Copy(io.Discard, x.stdin)
		fmt.Fprintf(x.out, "present\n%s\n", out)
		return 0
	}
	io.Copy(io.Discard, x.stdin) // the registry password, or nothing
	if code := x.docker([]string{"pull", "--quiet", img}); code != 0 {
		return code
	}
	out, _ := inspect()
	fmt.Fprintf(x.out, "pulled\n%s\n", out)
	return 0
}

// evictScript removes each image of args no container uses and prints it.
func (x *cmdCtx) evictScript(args []string) int {
	h := x.h
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ref := range args {
		im := h.state.image(ref)
		if im == nil {
			continue
		}
		used := false
		for _, c := range h.state.containers {
			used = used || c.Image == ref || c.Image == im.ref
		}
		if !used {
			delete(h.state.images, im.ref)
			fmt.Fprintln(x.out, ref)
		}
	}
	return 0
}
