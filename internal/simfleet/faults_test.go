package simfleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/hostexec"
	"golang.org/x/crypto/ssh"
)

// pool is a strict hostexec pool for the fleet (its known_hosts, its
// user key).
func pool(t *testing.T, f *Fleet) *hostexec.Pool {
	t.Helper()
	p, err := hostexec.New(hostexec.Config{KnownHosts: []string{f.KnownHosts()}, Keys: []string{f.UserKey()},
		KeysOnly: true, Port: f.Port(), ConnectTimeout: 2 * time.Second, Home: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func run(t *testing.T, p *hostexec.Pool, addr string, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := p.Run(ctx, hostexec.Host{Addr: addr}, argv, hostexec.RunOptions{})
	return string(res.Stdout), err
}

// TestSplitLine_InvertsQuote: the sim reads back exactly the argv
// hostexec quoted, whatever bytes it holds.
func TestSplitLine_InvertsQuote(t *testing.T) {
	for _, argv := range [][]string{
		{"docker", "ps"},
		{"sh", "-c", `echo "$1" 'x'`, "sh", "it's", ""},
		{"a b", "c\nd", `\`, `'`, `''`, `"`, "$HOME", "*"},
		{"A=b", "c"}, // quoted by Quote: a word, not an assignment
	} {
		got, err := splitLine("CAPSTAN_RUN=abc " + hostexec.Quote(argv))
		if err != nil || strings.Join(got, "\x00") != strings.Join(argv, "\x00") {
			t.Errorf("splitLine(Quote(%q)) = %q, %v", argv, got, err)
		}
	}
}

func FuzzSplitLine(f *testing.F) {
	f.Add("a", "b'c", "")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		argv := []string{a, b, c}
		if strings.ContainsRune(a+b+c, 0) {
			return
		}
		got, err := splitLine("CAPSTAN_RUN=1 " + hostexec.Quote(argv))
		if err != nil || strings.Join(got, "\x00") != strings.Join(argv, "\x00") {
			t.Errorf("splitLine(Quote(%q)) = %q, %v", argv, got, err)
		}
	})
}

// TestFleet_StrictHostKeys: each host has its own key; a pool trusting
// the fleet's known_hosts reaches it, and one that trusts only another
// host's key is refused.
func TestFleet_StrictHostKeys(t *testing.T) {
	f := Start(t, Options{Hosts: 2})
	p := pool(t, f)
	if _, err := run(t, p, f.Hosts()[1], "mkdir", "-p", "x"); err != nil {
		t.Fatalf("strict pool: %v", err)
	}
	if !f.Host(1).Dir("x") || f.Host(0).Dir("x") {
		t.Error("the command did not run on host 1 alone")
	}
	// A known_hosts that gives host 1 host 0's key: refused.
	wrong := filepath.Join(t.TempDir(), "known_hosts")
	line := fmt.Sprintf("[%s]:%d %s", f.Hosts()[1], f.Port(), ssh.MarshalAuthorizedKey(f.Host(0).signer.PublicKey()))
	if err := os.WriteFile(wrong, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	p2, err := hostexec.New(hostexec.Config{KnownHosts: []string{wrong}, Keys: []string{f.UserKey()}, KeysOnly: true,
		Port: f.Port(), Home: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if _, err := run(t, p2, f.Hosts()[1], "mkdir", "-p", "y"); !errors.Is(err, hostexec.ErrHostKey) {
		t.Errorf("with host 0's key for host 1: err = %v, want ErrHostKey", err)
	}
}

// TestFleet_Unknown: a command the sim does not model exits 127 and is
// recorded.
func TestFleet_Unknown(t *testing.T) {
	f := Start(t, Options{})
	_, err := run(t, pool(t, f), f.Hosts()[0], "reboot", "now")
	var ee *hostexec.ExitError
	if !errors.As(err, &ee) || ee.Code != 127 {
		t.Fatalf("err = %v, want exit 127", err)
	}
	if u := f.Stats().Unknown; len(u) != 1 || !strings.Contains(u[0], "reboot now") {
		t.Errorf("unknown = %q", u)
	}
}

// TestFleet_Faults: a refusing host is unreachable and comes back when
// healed; a flapping host fails some commands and serves others; a
// blackholed host times out; a slow host takes its multiple of the
// latency.
func TestFleet_Faults(t *testing.T) {
	lat := Latency{Exec: 20 * time.Millisecond}
	f := Start(t, Options{Hosts: 3, Latency: &lat})
	p := pool(t, f)
	addr := f.Hosts()
	if err := f.Host(0).SetFault(Refuse); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, p, addr[0], "mkdir", "-p", "a"); !errors.Is(err, hostexec.ErrUnreachable) {
		t.Errorf("refusing host: err = %v, want ErrUnreachable", err)
	}
	if err := f.Host(0).SetFault(Healthy); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, p, addr[0], "mkdir", "-p", "a"); err != nil {
		t.Errorf("healed host: %v", err)
	}

	f.Host(1).SetFault(Flapping)
	ok, failed := 0, 0
	for i := 0; i < 12; i++ {
		if _, err := run(t, p, addr[1], "mkdir", "-p", "a"); err != nil {
			failed++
		} else {
			ok++
		}
	}
	if ok == 0 || failed == 0 {
		t.Errorf("flapping host: %d ok, %d failed; want some of each", ok, failed)
	}

	// A blackholed host takes the connection and never answers: the pool
	// gives up after its ConnectTimeout.
	if err := f.Host(2).SetFault(Blackhole); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, p, addr[2], "mkdir", "-p", "a"); !errors.Is(err, hostexec.ErrUnreachable) {
		t.Errorf("blackholed host: err = %v, want ErrUnreachable", err)
	}
	if err := f.Host(2).SetFault(Healthy); err != nil {
		t.Fatal(err)
	}

	f.Host(2).SetSlow(10)
	if got := f.Host(2).lat(lat.Exec); got != 200*time.Millisecond {
		t.Errorf("slow host's exec latency = %v, want 200ms", got)
	}
}

// TestFleet_MaxSessions: the sim refuses an eleventh session on one
// connection, as OpenSSH does, and counts the most it saw; hostexec
// queues rather than exceed it.
func TestFleet_MaxSessions(t *testing.T) {
	lat := Latency{Exec: 50 * time.Millisecond}
	f := Start(t, Options{Latency: &lat})
	p := pool(t, f)
	var wg sync.WaitGroup
	for i := 0; i < 25; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := run(t, p, f.Hosts()[0], "mkdir", "-p", "d"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	st := f.Stats()
	if st.SessionsPerConnMax > MaxSessions || st.RefusedSessions != 0 || st.SessionsPerConnMax < 2 {
		t.Errorf("sessions per connection at most %d, %d refused", st.SessionsPerConnMax, st.RefusedSessions)
	}
	if st.Commands["mkdir"] != 25 {
		t.Errorf("commands %v", st.Commands)
	}
}
