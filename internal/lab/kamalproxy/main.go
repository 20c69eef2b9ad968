// Command kamalproxy is the lab's stand-in for basecamp/kamal-proxy, which
// cannot be installed here. It speaks the subset of kamal-proxy's command
// line that Kamal (and capstan's kamal-proxy driver) use, so the driver's
// container boot and `docker exec kamal-proxy kamal-proxy …` sequence runs
// for real in the lab:
//
//	kamal-proxy run [--debug] [--metrics-port N]   serve :80, control on 127.0.0.1:9099
//	kamal-proxy deploy NAME --target=HOST:PORT [--host=H]… [--deploy-timeout=30s]
//	    [--drain-timeout=30s] [--health-check-path=/up] [--health-check-interval=1s]
//	    [--health-check-timeout=5s] [other flags accepted and ignored]
//	kamal-proxy list
//	kamal-proxy remove NAME
//
// deploy health-checks the target (2xx), swaps the route atomically, waits
// for the old target's in-flight requests (drain) and returns; routes are
// kept in the config volume so a restarted proxy comes back with them. It is
// a test double: it is not kamal-proxy and claims none of its behaviour
// beyond this.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	control   = "127.0.0.1:9099"
	stateFile = "/home/kamal-proxy/.config/kamal-proxy/standin-state.json"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kamal-proxy run|deploy|list|remove")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = serve()
	case "deploy", "remove":
		err = post(os.Args[1], os.Args[2:])
	case "list":
		err = list()
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

// route is one service.
type route struct {
	Name   string   `json:"name"`
	Target string   `json:"target"`
	Hosts  []string `json:"hosts"`

	proxy    *httputil.ReverseProxy
	inflight atomic.Int64
}

type server struct {
	mu     sync.RWMutex
	routes map[string]*route
}

func (s *server) lookup(host string) *route {
	s.mu.RLock()
	defer s.mu.RUnlock()
	host, _, _ = strings.Cut(host, ":")
	var fallback *route
	for _, r := range s.routes {
		if len(r.Hosts) == 0 {
			fallback = r
		}
		for _, h := range r.Hosts {
			if h == host {
				return r
			}
		}
	}
	return fallback
}

func newRoute(name, target string, hosts []string) *route {
	u := &url.URL{Scheme: "http", Host: target}
	return &route{Name: name, Target: target, Hosts: hosts, proxy: httputil.NewSingleHostReverseProxy(u)}
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := s.lookup(r.Host)
	if rt == nil {
		http.Error(w, "no route", http.StatusServiceUnavailable)
		return
	}
	rt.inflight.Add(1)
	defer rt.inflight.Add(-1)
	rt.proxy.ServeHTTP(w, r)
}

func (s *server) save() {
	s.mu.RLock()
	var list []*route
	for _, r := range s.routes {
		list = append(list, r)
	}
	s.mu.RUnlock()
	b, _ := json.Marshal(list)
	_ = os.MkdirAll(filepath.Dir(stateFile), 0o755)
	tmp := stateFile + ".tmp"
	if os.WriteFile(tmp, b, 0o644) == nil {
		_ = os.Rename(tmp, stateFile)
	}
}

func serve() error {
	s := &server{routes: map[string]*route{}}
	if b, err := os.ReadFile(stateFile); err == nil {
		var list []*route
		if json.Unmarshal(b, &list) == nil {
			for _, r := range list {
				s.routes[r.Name] = newRoute(r.Name, r.Target, r.Hosts)
			}
		}
	}
	ctl := http.NewServeMux()
	ctl.HandleFunc("POST /deploy", s.deploy)
	ctl.HandleFunc("POST /remove", func(w http.ResponseWriter, r *http.Request) {
		var args []string
		_ = json.NewDecoder(r.Body).Decode(&args)
		if len(args) > 0 {
			s.mu.Lock()
			delete(s.routes, args[0])
			s.mu.Unlock()
			s.save()
		}
	})
	ctl.HandleFunc("GET /list", func(w http.ResponseWriter, r *http.Request) {
		s.mu.RLock()
		defer s.mu.RUnlock()
		names := make([]string, 0, len(s.routes))
		for n := range s.routes {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(w, "%-20s %-20s %-30s %-10s %s\n", "Service", "Host", "Target", "State", "TLS")
		for _, n := range names {
			rt := s.routes[n]
			host := "*"
			if len(rt.Hosts) > 0 {
				host = strings.Join(rt.Hosts, ",")
			}
			fmt.Fprintf(w, "%-20s %-20s %-30s %-10s %s\n", n, host, rt.Target, "running", "no")
		}
	})
	go func() { _ = http.ListenAndServe(control, ctl) }()
	fmt.Fprintln(os.Stderr, "kamal-proxy stand-in serving :80")
	return http.ListenAndServe(":80", s)
}

// deploy health-checks the target, switches the route and drains the old
// target.
func (s *server) deploy(w http.ResponseWriter, r *http.Request) {
	var args []string
	if err := json.NewDecoder(r.Body).Decode(&args); err != nil || len(args) == 0 {
		http.Error(w, "deploy needs a service name", http.StatusBadRequest)
		return
	}
	name := args[0]
	opt := map[string][]string{}
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		opt[k] = append(opt[k], strings.Trim(v, `"`))
	}
	dur := func(k string, def time.Duration) time.Duration {
		if v := opt[k]; len(v) > 0 {
			if d, err := time.ParseDuration(v[0]); err == nil {
				return d
			}
		}
		return def
	}
	target := ""
	if t := opt["target"]; len(t) > 0 {
		target = t[0]
	}
	path := "/up"
	if p := opt["health-check-path"]; len(p) > 0 {
		path = p[0]
	}
	deadline := time.Now().Add(dur("deploy-timeout", 30*time.Second))
	c := &http.Client{Timeout: dur("health-check-timeout", 5*time.Second)}
	for {
		resp, err := c.Get("http://" + target + path)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode < 300 {
				break
			}
		}
		if time.Now().After(deadline) {
			http.Error(w, fmt.Sprintf("target failed to become healthy within configured timeout (%s)", dur("deploy-timeout", 30*time.Second)), http.StatusServiceUnavailable)
			return
		}
		time.Sleep(dur("health-check-interval", time.Second))
	}
	nr := newRoute(name, target, opt["host"])
	s.mu.Lock()
	old := s.routes[name]
	s.routes[name] = nr
	s.mu.Unlock()
	s.save()
	if old != nil && old.Target != target {
		drain := time.Now().Add(dur("drain-timeout", 30*time.Second))
		for old.inflight.Load() > 0 && time.Now().Before(drain) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	fmt.Fprintf(w, "deployed %s to %s\n", name, target)
}

func post(cmd string, args []string) error {
	b, _ := json.Marshal(args)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+control+"/"+cmd, strings.NewReader(string(b)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return errors.New(strings.TrimSpace(string(out)))
	}
	fmt.Print(string(out))
	return nil
}

func list() error {
	resp, err := http.Get("http://" + control + "/list")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}
