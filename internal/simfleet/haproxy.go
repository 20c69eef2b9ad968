package simfleet

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path"
	"slices"
	"strings"
	"time"
)

// The HAProxy model: capstan's haproxy driver boots a container with a
// config file and an admin socket directory, reloads it with SIGUSR2,
// health-checks new targets over direct-tcpip, and switches servers with
// the runtime API over the admin socket (a direct-streamlocal channel).

// haproxyState is the HAProxy container's configuration as the boot
// script named it, and its live backends.
type haproxyState struct {
	container, cfgPath, sockDir string
	backends                    map[string]map[string]*haServer // backend -> server name -> server
}

type haServer struct {
	addr  netip.AddrPort
	admin int // 0 ready, 0x01 maint, 0x08 drain
}

// haproxyBoot runs the driver's boot script: name=$1 net=$2 cfgdir=$3
// sockdir=$4 cfg=$5; it prints the container's state, the marker and the
// config file.
func (x *cmdCtx) haproxyBoot(args []string) int {
	if len(args) != 5 {
		return x.unknown()
	}
	name, network, cfgDir, sockDir, cfg := args[0], args[1], args[2], args[3], args[4]
	h := x.h
	h.mu.Lock()
	h.state.haproxy = &haproxyState{container: name, cfgPath: cfg, sockDir: path.Clean(sockDir), backends: map[string]map[string]*haServer{}}
	state := "missing"
	if c := h.state.container(name); c != nil && c.Name == name {
		state = fmt.Sprint(c.State == "running")
		h.state.haproxyReload()
	}
	if state != "true" {
		if _, ok := h.state.networks[network]; !ok {
			h.state.networks[network] = randomID()
		}
	}
	h.state.mkdirAll(cfgDir)
	h.state.mkdirAll(sockDir)
	content := h.state.files[abs(cfg)]
	h.mu.Unlock()
	fmt.Fprintf(x.out, "%s\n--capstan-haproxy-config--\n%s", state, content)
	return 0
}

// haproxyReload loads the backends and servers of the config file, as a
// (re)started HAProxy does: runtime changes not in the file are lost.
// The caller holds h.mu.
func (s *hostState) haproxyReload() {
	hp := s.haproxy
	if hp == nil {
		return
	}
	hp.backends = map[string]map[string]*haServer{}
	var cur map[string]*haServer
	for _, l := range strings.Split(s.files[abs(hp.cfgPath)], "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[0] == "backend":
			cur = map[string]*haServer{}
			hp.backends[f[1]] = cur
		case len(f) >= 3 && f[0] == "server" && cur != nil:
			if ap, err := netip.ParseAddrPort(f[2]); err == nil {
				cur[f[1]] = &haServer{addr: ap}
			}
		case len(f) > 0 && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t"):
			cur = nil
		}
	}
}

// containerChanged reloads HAProxy when c is its container and runs.
func (s *hostState) containerChanged(c *Container) {
	if s.haproxy != nil && c.Name == s.haproxy.container && c.State == "running" {
		s.haproxyReload()
	}
}

// haproxySocket reports whether p is under the admin socket directory of
// a running HAProxy.
func (h *Host) haproxySocket(p string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	hp := h.state.haproxy
	if hp == nil || path.Dir(path.Clean(p)) != hp.sockDir {
		return false
	}
	c := h.state.container(hp.container)
	return c != nil && c.State == "running"
}

// serveRuntimeAPI answers HAProxy runtime API commands on one connection:
// in prompt mode every answer ends with "\n> ", else the connection
// closes after one answer.
func (h *Host) serveRuntimeAPI(rw io.ReadWriter) {
	br := bufio.NewReader(rw)
	prompt := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimSpace(line)
		h.wait(h.latency().RTT)
		var out string
		if cmd == "prompt" {
			prompt = true
		} else {
			out = h.runtimeCommand(cmd)
		}
		if !prompt {
			io.WriteString(rw, out)
			return
		}
		io.WriteString(rw, out+"\n> ")
	}
}

// runtimeCommand answers one runtime API command.
func (h *Host) runtimeCommand(cmd string) string {
	f := strings.Fields(cmd)
	h.mu.Lock()
	defer h.mu.Unlock()
	hp := h.state.haproxy
	kind := strings.Join(f[:min(2, len(f))], " ")
	h.f.stats.count("haproxy " + kind)
	server := func(ref string) (map[string]*haServer, string, *haServer) {
		be, srv, _ := strings.Cut(ref, "/")
		servers := hp.backends[be]
		return servers, srv, servers[srv]
	}
	switch {
	case kind == "show backend":
		var b strings.Builder
		b.WriteString("# name\n")
		for _, name := range sortedKeys(hp.backends) {
			b.WriteString(name + "\n")
		}
		return b.String()
	case kind == "show servers":
		var b strings.Builder
		b.WriteString("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port\n")
		for bi, be := range sortedKeys(hp.backends) {
			if len(f) > 3 && f[3] != be {
				continue
			}
			for si, name := range sortedKeys(hp.backends[be]) {
				s := hp.backends[be][name]
				fmt.Fprintf(&b, "%d %s %d %s %s 2 %d 1 1 10 1 0 0 0 0 0 0 - %d\n", bi+1, be, si+1, name, s.addr.Addr(), s.admin, s.addr.Port())
			}
		}
		return b.String()
	case kind == "show stat" && len(f) >= 3:
		var b strings.Builder
		b.WriteString("# pxname,svname,qcur,qmax,scur,smax,status,addr\n")
		for _, name := range sortedKeys(hp.backends[f[2]]) {
			s := hp.backends[f[2]][name]
			status := map[int]string{0: "UP", 1: "MAINT", 8: "DRAIN"}[s.admin]
			fmt.Fprintf(&b, "%s,%s,0,0,0,0,%s,%s\n", f[2], name, status, s.addr)
		}
		return b.String()
	case kind == "set server" && len(f) == 5 && f[3] == "state":
		_, _, s := server(f[2])
		admin, ok := map[string]int{"ready": 0, "maint": 1, "drain": 8}[f[4]]
		if s == nil || !ok {
			return "No such server.\n"
		}
		s.admin = admin
		return ""
	case kind == "add server" && len(f) >= 4:
		servers, name, s := server(f[2])
		ap, err := netip.ParseAddrPort(f[3])
		switch {
		case servers == nil:
			return "No such backend.\n"
		case s != nil:
			return "Already exists a server with the same name in backend.\n"
		case err != nil:
			return "Invalid address.\n"
		}
		servers[name] = &haServer{addr: ap, admin: 1} // added servers start in maintenance
		return "New server registered.\n"
	case kind == "del server" && len(f) == 3:
		servers, name, s := server(f[2])
		if s == nil {
			return "No such server.\n"
		}
		if s.admin&1 == 0 {
			return "Only servers in maintenance mode can be deleted.\n"
		}
		delete(servers, name)
		return "Server deleted.\n"
	case kind == "shutdown sessions" && len(f) == 4:
		return ""
	}
	h.f.stats.unknownCmd(h.addr + ": haproxy runtime API: " + cmd)
	return "Unknown command.\n"
}

// probeTarget serves HTTP on a direct-tcpip channel to addr: 200 from a
// running container with that address on the kamal network, after the
// host's Switch latency (the app's start), for each request.
func (h *Host) probeTarget(rw io.ReadWriter, addr netip.AddrPort) {
	br := bufio.NewReader(rw)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		h.f.stats.count("http " + req.Method)
		status := http.StatusServiceUnavailable
		if h.serving(addr.Addr().String()) {
			h.wait(h.latency().Switch)
			status = http.StatusOK
		}
		resp := &http.Response{StatusCode: status, ProtoMajor: 1, ProtoMinor: 1, Request: req,
			Header: http.Header{"Date": {time.Now().UTC().Format(http.TimeFormat)}}, Body: http.NoBody}
		if err := resp.Write(rw); err != nil {
			return
		}
	}
}

// serving reports whether a running container has ip on the kamal
// network.
func (h *Host) serving(ip string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.ContainsFunc(h.state.containers, func(c *Container) bool { return c.IP == ip && c.State == "running" })
}

// HAProxyServers returns, per HAProxy backend, the addresses of its
// servers that take traffic (ready), sorted; nil when HAProxy was never
// booted.
func (h *Host) HAProxyServers() map[string][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	hp := h.state.haproxy
	if hp == nil {
		return nil
	}
	out := map[string][]string{}
	for be, servers := range hp.backends {
		out[be] = []string{}
		for _, s := range servers {
			if s.admin == 0 {
				out[be] = append(out[be], s.addr.String())
			}
		}
		slices.Sort(out[be])
	}
	return out
}
