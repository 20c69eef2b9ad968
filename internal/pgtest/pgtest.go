// Package pgtest runs a private PostgreSQL server for tests: Debian's
// binaries (/usr/lib/postgresql/NN/bin), initdb into a temporary data
// directory, the server on a free loopback port from internal/testport and
// its unix socket in that directory. It runs as the "postgres" OS user when
// the test runs as root (PostgreSQL refuses root).
//
// Start shares one server per test binary and gives each call a fresh
// database; StartServer gives a test a server of its own, which it may
// stop and restart. A test is skipped, with the reason, when the binaries
// are missing, except under CI=true, where that fails it (.ci/setup
// installs them).
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/capstan-dev/capstan/internal/testport"
)

// BinGlob is where Debian installs the server binaries, one directory per
// major version; the newest one found is used.
const BinGlob = "/usr/lib/postgresql/*/bin"

// Server is a running private PostgreSQL server. Its methods are safe for
// concurrent use.
type Server struct {
	bin  string // directory of initdb and postgres
	root string // temporary directory: data/, sock/, log
	port int
	cred *syscall.Credential // nil when not running as root

	mu   sync.Mutex
	proc *os.Process
	done chan struct{} // closed when proc has exited
	dbs  atomic.Int64
}

var shared struct {
	once sync.Once
	srv  *Server
	err  error
	// ready holds databases made ahead (CREATE DATABASE takes a few
	// hundred milliseconds, which a test need not wait for); it is
	// closed when making them fails.
	ready chan string
}

// Start returns the DSN of a fresh database on the test binary's shared
// server (started at the first call, stopped when the binary exits).
func Start(t testing.TB) string {
	t.Helper()
	bin := findBin(t)
	shared.once.Do(func() {
		shared.srv, shared.err = newServer(bin, testport.Free(t))
		if shared.err == nil {
			shared.err = shared.srv.start()
		}
		if shared.err == nil {
			shared.ready = make(chan string, 2)
			go shared.srv.makeAhead(shared.ready)
		}
	})
	err := shared.err
	if err == nil && shared.ready == nil {
		err = errors.New("the shared server did not start")
	}
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if dsn, ok := <-shared.ready; ok {
		return dsn
	}
	return shared.srv.CreateDB(t) // reports why making one failed
}

// makeAhead keeps ready full of new databases until making one fails
// (the server stopped), then closes it.
func (s *Server) makeAhead(ready chan<- string) {
	defer close(ready)
	for {
		dsn, err := s.createDB()
		if err != nil {
			return
		}
		ready <- dsn
	}
}

// Main runs a test binary's tests and then stops the shared server and
// removes its files; call it from TestMain: os.Exit(pgtest.Main(m)).
// Without it the server still dies with the binary, but its temporary
// directory stays until a later run sweeps it.
func Main(m *testing.M) int {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.Stop()
		os.RemoveAll(shared.srv.root)
	}
	return code
}

// StartServer starts a server for t alone; it is stopped, and its files
// removed, when t ends.
func StartServer(t testing.TB) *Server {
	t.Helper()
	s, err := newServer(findBin(t), testport.Free(t))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { s.Stop(); os.RemoveAll(s.root) })
	if err := s.start(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return s
}

// DSN returns the URL of database db on s (over TCP, user postgres, no
// password).
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// Port is the loopback TCP port s listens on.
func (s *Server) Port() int { return s.port }

// CreateDB creates a new, empty database and returns its DSN.
func (s *Server) CreateDB(t testing.TB) string {
	t.Helper()
	dsn, err := s.createDB()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dsn
}

func (s *Server) createDB() (string, error) {
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.dbs.Add(1))
	db, err := sql.Open("pgx", s.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name+" STRATEGY = FILE_COPY"); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	return s.DSN(name), nil
}

// Restart stops s and starts it again on the same port and data.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("pgtest: restart: %v", err)
	}
}

// Start starts a stopped s again (no-op when it runs).
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatalf("pgtest: start: %v", err)
	}
}

// Stop shuts s down (fast shutdown: open sessions are cut) and waits for
// it to exit; a no-op when it is not running.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = s.proc.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.proc.Kill()
		<-s.done
	}
	s.proc = nil
}

// findBin returns the newest server binary directory, or skips t (fails
// it under CI=true) when there is none.
func findBin(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob(BinGlob)
	slices.SortFunc(dirs, func(a, b string) int { return majorOf(b) - majorOf(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d
		}
	}
	msg := "pgtest: no PostgreSQL server in " + BinGlob + " (apt-get install postgresql; .ci/setup does)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func majorOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// newServer makes the data directory with initdb, for a server on port.
func newServer(bin string, port int) (*Server, error) {
	sweep()
	root, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, root: root, port: port}
	if os.Geteuid() == 0 {
		if s.cred, err = postgresUser(); err != nil {
			return nil, err
		}
		if err := os.Chown(root, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return nil, err
		}
	}
	init := s.command("initdb", "-D", s.dir("data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if out, err := init.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Mkdir(s.dir("sock"), 0o700); err != nil {
		return nil, err
	}
	if s.cred != nil {
		if err := os.Chown(s.dir("sock"), int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// sweep removes the directories of servers that died with their test
// binary: older than ten minutes (initdb has finished) with no live
// postmaster.
func sweep() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgtest-*"))
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil || time.Since(fi.ModTime()) < 10*time.Minute {
			continue
		}
		if pid, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			n, _ := strconv.Atoi(strings.SplitN(string(pid), "\n", 2)[0])
			if n > 0 && syscall.Kill(n, 0) == nil {
				continue
			}
		}
		os.RemoveAll(d)
	}
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the postgres OS user: %w", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (s *Server) dir(name string) string { return filepath.Join(s.root, name) }

// command runs a server binary as the postgres user when root.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.root
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGQUIT}
	return cmd
}

// start runs postgres and waits until it accepts connections.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return nil
	}
	logf, err := os.OpenFile(s.dir("log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := s.command("postgres", "-D", s.dir("data"), "-p", strconv.Itoa(s.port), "-k", s.dir("sock"),
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	started, done := make(chan error, 1), make(chan struct{})
	// Pdeathsig fires when the thread that forked the server exits: fork
	// from a goroutine locked to its thread, which lives until the server
	// exits, so the server dies with the test binary and not before.
	go func() {
		runtime.LockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			_ = cmd.Wait()
		}
		close(done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	s.proc, s.done = cmd.Process, done
	if err := s.waitReady(done); err != nil {
		_ = s.proc.Kill()
		<-done
		s.proc = nil
		log, _ := os.ReadFile(s.dir("log"))
		return fmt.Errorf("%w; server log:\n%s", err, tail(string(log), 2000))
	}
	return nil
}

func (s *Server) waitReady(exited <-chan struct{}) error {
	db, err := sql.Open("pgx", s.DSN("postgres")+"&connect_timeout=2")
	if err != nil {
		return err
	}
	defer db.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("postgres exited at start")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after 30s: %w", err)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
