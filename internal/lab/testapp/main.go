// Command testapp is the lab's test application: a tiny HTTP server that
// stands in for a user's app. It is built as a static binary into images
// FROM scratch; the image tag's configuration sets its behaviour.
//
//	GET /up   200 "ok" when healthy, 503 when APP_FAIL_UP=1 or before APP_UP_DELAY has passed
//	GET /     "<APP_VERSION> <hostname>\n"
//	POST /    echoes the byte count of the body with the version
//	GET /sleep?d=2s  answers after d (for in-flight request tests)
//
// Environment: APP_VERSION, APP_PORT (default 3000), APP_FAIL_UP,
// APP_UP_DELAY (a Go duration), APP_EXIT_AFTER (exit 1 after a duration, to
// simulate a crashing release), APP_LOG_ENV (print that variable's value at
// start: tests check that capstan masks secrets in the logs it keeps).
// SIGTERM drains in-flight requests and exits 0.
//
// `testapp job URL CODE [SLEEP]` is a release job instead: it POSTs
// "<APP_VERSION> <hostname>" to URL, sleeps SLEEP (a Go duration) if
// given, and exits CODE, saying each step on stdout.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "job" {
		os.Exit(job(os.Args[2:]))
	}
	version := envOr("APP_VERSION", "dev")
	port := envOr("APP_PORT", "3000")
	host, _ := os.Hostname()
	start := time.Now()
	var upDelay time.Duration
	if d, err := time.ParseDuration(os.Getenv("APP_UP_DELAY")); err == nil {
		upDelay = d
	}
	failUp := os.Getenv("APP_FAIL_UP") == "1"
	if d, err := time.ParseDuration(os.Getenv("APP_EXIT_AFTER")); err == nil {
		go func() {
			time.Sleep(d)
			fmt.Fprintln(os.Stderr, "testapp: crashing as asked by APP_EXIT_AFTER")
			os.Exit(1)
		}()
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/up", func(w http.ResponseWriter, r *http.Request) {
		if failUp || time.Since(start) < upDelay {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		if d > time.Minute {
			d = time.Minute
		}
		time.Sleep(d)
		fmt.Fprintf(w, "%s %s slept %s\n", version, host, d)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%s %s posted %d\n", version, host, n)
			return
		}
		fmt.Fprintf(w, "%s %s\n", version, host)
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if name := os.Getenv("APP_LOG_ENV"); name != "" {
		fmt.Fprintf(os.Stderr, "testapp: %s=%s\n", name, os.Getenv(name))
	}
	fmt.Fprintf(os.Stderr, "testapp %s listening on :%s\n", version, port)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "testapp: stopped")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// job is `testapp job URL CODE [SLEEP]`; it returns the exit code.
func job(args []string) int {
	if len(args) < 2 {
		fmt.Println("usage: testapp job URL CODE [SLEEP]")
		return 2
	}
	code, err := strconv.Atoi(args[1])
	if err != nil {
		fmt.Println("testapp job: bad exit code:", args[1])
		return 2
	}
	host, _ := os.Hostname()
	version := envOr("APP_VERSION", "dev")
	fmt.Printf("testapp job: %s posting to %s\n", version, args[0])
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post(args[0], "text/plain", strings.NewReader(version+" "+host))
	if err != nil {
		fmt.Println("testapp job:", err)
		return 2
	}
	resp.Body.Close()
	if len(args) > 2 {
		d, _ := time.ParseDuration(args[2])
		fmt.Printf("testapp job: sleeping %s\n", d)
		time.Sleep(d)
	}
	fmt.Printf("testapp job: exit %d\n", code)
	return code
}
