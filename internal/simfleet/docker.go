package simfleet

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// boolFlags are the docker CLI flags that take no value.
var boolFlags = map[string]bool{
	"-d": true, "--detach": true, "--init": true, "--rm": true, "-i": true, "--interactive": true,
	"--tty": true, "--privileged": true, "--read-only": true, "--no-healthcheck": true,
	"-q": true, "--quiet": true, "-a": true, "--all": true, "--no-trunc": true, "-f": true, "--force": true,
	"--password-stdin": true, "--timestamps": true, "--follow": true,
}

// runFlags is what the sim reads of a docker create/run argv.
type runFlags struct {
	name, network, image string
	labels               map[string]string
	health, detach, rm   bool
	cmd                  []string
}

// parseRunFlags reads docker create/run options up to the image; what
// follows the image is the command.
func parseRunFlags(args []string) runFlags {
	o := runFlags{labels: map[string]string{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			o.image, o.cmd = a, args[i+1:]
			return o
		}
		if a == "--" {
			if i+1 < len(args) {
				o.image, o.cmd = args[i+1], args[i+2:]
			}
			return o
		}
		key, val, hasVal := strings.Cut(a, "=")
		if !hasVal && !boolFlags[key] && key != "-t" {
			if i+1 < len(args) {
				i++
				val = args[i]
			}
		}
		switch key {
		case "--name":
			o.name = val
		case "--network", "--net":
			o.network = val
		case "--label", "-l":
			k, v, _ := strings.Cut(val, "=")
			o.labels[k] = v
		case "--health-cmd":
			o.health = true
		case "-d", "--detach":
			o.detach = true
		case "--rm":
			o.rm = true
		}
	}
	return o
}

// flagValue removes flag (and its value, "--flag v" or "--flag=v") from
// args wherever it stands and returns the rest and the value.
func flagValue(args []string, names ...string) (rest []string, val string, found bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		for _, n := range names {
			if a == n && i+1 < len(args) {
				val, found = args[i+1], true
				i++
				goto next
			}
			if strings.HasPrefix(a, n+"=") {
				val, found = strings.TrimPrefix(a, n+"="), true
				goto next
			}
		}
		rest = append(rest, a)
	next:
	}
	return rest, val, found
}

// dropFlags removes the boolean flags names from args.
func dropFlags(args []string, names ...string) []string {
	var out []string
	for _, a := range args {
		keep := true
		for _, n := range names {
			if a == n {
				keep = false
			}
		}
		if keep {
			out = append(out, a)
		}
	}
	return out
}

// docker runs a docker CLI command (args after "docker"), counted as
// "docker <subcommand>".
func (x *cmdCtx) docker(args []string) int {
	if len(args) == 0 {
		return x.unknown()
	}
	sub, rest := args[0], args[1:]
	if sub == "container" && len(rest) > 0 { // docker container start|inspect|… = docker start|inspect|…
		sub, rest = rest[0], rest[1:]
	}
	if sub == "image" && len(rest) > 0 && rest[0] == "inspect" {
		sub, rest = "image inspect", rest[1:]
	}
	if sub == "network" && len(rest) > 0 {
		sub, rest = "network "+rest[0], rest[1:]
	}
	x.count("docker " + sub)
	h, f := x.h, x.h.f
	switch sub {
	case "create", "run":
		if sub == "create" {
			h.wait(h.latency().Create)
		} else {
			h.wait(h.latency().Create + h.latency().Start)
		}
		h.mu.Lock()
		c, msg := f.create(&h.state, rest)
		o := parseRunFlags(rest)
		if c != nil && sub == "run" {
			c.start()
			h.state.containerChanged(c)
			if !o.detach { // a one-off: it runs to completion (exit 0) in the foreground
				c.stop()
				if o.rm {
					h.state.remove(c)
				}
			}
		}
		h.mu.Unlock()
		if c == nil {
			return x.fail(125, msg)
		}
		if sub == "create" || o.detach {
			fmt.Fprintln(x.out, c.ID)
		}
		return 0
	case "start":
		return x.each(rest, h.latency().Start, func(c *Container) { c.start(); h.state.containerChanged(c) })
	case "stop":
		rest, _, _ = flagValue(rest, "-t", "--time", "--timeout", "-s", "--signal")
		return x.each(rest, h.latency().Stop, func(c *Container) { c.stop() })
	case "kill":
		rest, _, _ = flagValue(rest, "-s", "--signal")
		return x.each(rest, 0, h.state.containerChanged) // SIGUSR2 reloads HAProxy
	case "rm":
		force := len(dropFlags(rest, "-f", "--force")) != len(rest)
		return x.removeContainers(dropFlags(rest, "-f", "--force", "--"), force)
	case "rename":
		if len(rest) != 2 {
			return x.fail(1, `"docker rename" requires exactly 2 arguments.`)
		}
		return x.rename(rest[0], rest[1])
	case "tag":
		if len(rest) != 2 {
			return x.fail(1, `"docker tag" requires exactly 2 arguments.`)
		}
		return x.tag(rest[0], rest[1])
	case "inspect":
		return x.inspect(rest, false)
	case "image inspect":
		return x.inspect(rest, true)
	case "pull":
		rest = dropFlags(rest, "-q", "--quiet")
		if len(rest) != 1 {
			return x.fail(1, `"docker pull" requires exactly 1 argument.`)
		}
		h.wait(h.latency().PullPerMB * time.Duration(f.opts.ImageMB))
		h.mu.Lock()
		im := f.pulled(&h.state, rest[0])
		h.mu.Unlock()
		fmt.Fprintln(x.out, im.ref)
		return 0
	case "login":
		io.Copy(io.Discard, x.stdin)
		fmt.Fprintln(x.out, "Login Succeeded")
		return 0
	case "logs":
		fmt.Fprintln(x.out, "2026-01-01T00:00:00.000000000Z simulated container log line")
		return 0
	case "info":
		_, format, _ := flagValue(rest, "--format", "-f")
		out, err := render(format, map[string]any{"DockerRootDir": "/var/lib/docker", "ServerVersion": "27.5.1"})
		if err != nil {
			return x.fail(1, "template: "+err.Error())
		}
		fmt.Fprintln(x.out, out)
		return 0
	case "network create":
		return x.networkCreate(rest)
	case "network inspect":
		return x.networkInspect(rest)
	case "network connect":
		return x.networkConnect(rest)
	case "exec":
		return x.dockerExec(rest)
	}
	return x.unknown()
}

// each applies f to every container of refs after latency d (per
// container), printing each ref as the CLI does.
func (x *cmdCtx) each(refs []string, d time.Duration, f func(*Container)) int {
	code := 0
	for _, ref := range refs {
		x.h.wait(d)
		x.h.mu.Lock()
		c := x.h.state.container(ref)
		if c != nil {
			f(c)
		}
		x.h.mu.Unlock()
		if c == nil {
			fmt.Fprintf(x.errw, "Error response from daemon: No such container: %s\n", ref)
			code = 1
			continue
		}
		fmt.Fprintln(x.out, ref)
	}
	return code
}

func (x *cmdCtx) removeContainers(refs []string, force bool) int {
	h := x.h
	code := 0
	for _, ref := range refs {
		h.mu.Lock()
		c := h.state.container(ref)
		switch {
		case c == nil:
			fmt.Fprintf(x.errw, "Error response from daemon: No such container: %s\n", ref)
			code = 1
		case c.State == "running" && !force:
			fmt.Fprintf(x.errw, "Error response from daemon: cannot remove container %q: container is running: stop the container before removing or force remove\n", "/"+c.Name)
			code = 1
		default:
			h.state.remove(c)
			fmt.Fprintln(x.out, ref)
		}
		h.mu.Unlock()
	}
	return code
}

func (x *cmdCtx) rename(ref, name string) int {
	h := x.h
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.state.container(ref)
	if c == nil {
		return x.fail(1, "Error response from daemon: No such container: "+ref)
	}
	if o := h.state.container(name); o != nil && o.Name == name && o != c {
		return x.fail(1, fmt.Sprintf("Error response from daemon: Conflict. The container name \"/%s\" is already in use.", name))
	}
	c.Name = name
	return 0
}

func (x *cmdCtx) tag(src, dst string) int {
	h := x.h
	h.mu.Lock()
	defer h.mu.Unlock()
	im := h.state.image(src)
	if im == nil {
		return x.fail(1, "Error response from daemon: No such image: "+src)
	}
	cp := *im
	cp.ref = dst
	if repo, _ := splitRef(dst); !strings.Contains(dst[len(repo):], ":") {
		cp.ref = dst + ":latest"
	}
	h.state.images[cp.ref] = &cp
	return 0
}

// inspect renders docker inspect (containers, or images when images is
// set or --type image), one format line per object.
func (x *cmdCtx) inspect(args []string, images bool) int {
	args, typ, _ := flagValue(args, "--type")
	args, format, hasFormat := flagValue(args, "--format", "-f")
	if typ == "image" {
		images = true
	}
	h := x.h
	h.mu.Lock()
	var views []any
	code := 0
	for _, ref := range args {
		var v any
		if images {
			if im := h.state.image(ref); im != nil {
				v = im.inspect()
			}
		} else if c := h.state.container(ref); c != nil {
			v = c.inspect()
		} else if typ == "" {
			if im := h.state.image(ref); im != nil {
				v = im.inspect()
			}
		}
		if v == nil {
			fmt.Fprintf(x.errw, "Error: No such object: %s\n", ref)
			code = 1
			continue
		}
		views = append(views, v)
	}
	h.mu.Unlock()
	if !hasFormat {
		out, _ := render("{{json .}}", views)
		fmt.Fprintln(x.out, out)
		return code
	}
	for _, v := range views {
		out, err := render(format, v)
		if err != nil {
			return x.fail(1, "template parsing error: "+err.Error())
		}
		fmt.Fprintln(x.out, out)
	}
	return code
}

func (x *cmdCtx) networkCreate(args []string) int {
	if len(args) != 1 {
		return x.unknown()
	}
	h := x.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.state.networks[args[0]]; ok {
		return x.fail(1, fmt.Sprintf("Error response from daemon: network with name %s already exists", args[0]))
	}
	id := randomID()
	h.state.networks[args[0]] = id
	fmt.Fprintln(x.out, id)
	return 0
}

func (x *cmdCtx) networkInspect(args []string) int {
	args, format, hasFormat := flagValue(args, "--format", "-f")
	if !hasFormat {
		format = "{{json .}}"
	}
	h := x.h
	h.mu.Lock()
	defer h.mu.Unlock()
	code := 0
	for _, n := range args {
		if _, ok := h.state.networks[n]; !ok {
			fmt.Fprintf(x.errw, "Error response from daemon: network %s not found\n", n)
			code = 1
			continue
		}
		out, err := render(format, h.state.networkView(n))
		if err != nil {
			return x.fail(1, "template parsing error: "+err.Error())
		}
		fmt.Fprintln(x.out, out)
	}
	return code
}

func (x *cmdCtx) networkConnect(args []string) int {
	if len(args) != 2 {
		return x.unknown()
	}
	h := x.h
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.state.container(args[1])
	if _, ok := h.state.networks[args[0]]; !ok || c == nil {
		return x.fail(1, "Error response from daemon: No such container or network")
	}
	h.state.connect(c, args[0])
	return 0
}

// dockerExec runs docker exec: the sim models kamal-proxy's CLI only.
func (x *cmdCtx) dockerExec(args []string) int {
	args = dropFlags(args, "-i", "--interactive", "-t", "--tty")
	if len(args) >= 2 && args[1] == "kamal-proxy" {
		x.h.mu.Lock()
		c := x.h.state.container(args[0])
		running := c != nil && c.State == "running"
		x.h.mu.Unlock()
		if !running {
			return x.fail(1, "Error response from daemon: container "+args[0]+" is not running")
		}
		return x.kamalProxy(args[2:])
	}
	return x.unknown()
}
