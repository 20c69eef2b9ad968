package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/capstan-dev/capstan/reconcile"
)

// Bounds of GET /api/v1/apps/{app}/logs.
const (
	defaultLogLines = 100
	maxLogLines     = 10000
	// logsTimeout bounds one logs request (observation and reads).
	logsTimeout = time.Minute
)

// logSource reads an app's container logs; *reconcile.App is one.
type logSource interface {
	Logs(ctx context.Context, o reconcile.LogOptions, w io.Writer) error
}

// loaded is the App of the last revision r loaded (nil before any).
func (r *appRunner) loaded() *reconcile.App {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// logSource is the App of the last revision r loaded (nil before any).
func (r *appRunner) logSource() logSource {
	if app := r.loaded(); app != nil {
		return app
	}
	return nil
}

// logOptions reads the query of a logs request: role and host (each
// comma-separated), since (a Go duration) and lines (1 to maxLogLines,
// default defaultLogLines).
func logOptions(r *http.Request) (reconcile.LogOptions, error) {
	q := r.URL.Query()
	o := reconcile.LogOptions{Roles: reconcile.SplitList(q.Get("role")), Hosts: reconcile.SplitList(q.Get("host")), Lines: defaultLogLines}
	if s := q.Get("lines"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLogLines {
			return o, fmt.Errorf("lines must be 1 to %d", maxLogLines)
		}
		o.Lines = n
	}
	if s := q.Get("since"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return o, errors.New("since must be a positive Go duration (10m, 1h30m)")
		}
		o.Since = d
	}
	return o, nil
}

// apiLogs answers the last lines of the current container of each role
// on each host as plain text, "HOST ROLE | text", secrets masked, merged
// by timestamp (no follow). A host that cannot be read is named in an
// X-Capstan-Warning header; the others are answered.
func (d *Daemon) apiLogs(w http.ResponseWriter, r *http.Request) {
	a := d.app(w, r)
	if a == nil {
		return
	}
	o, err := logOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	src := d.logsOf(a)
	if src == nil {
		http.Error(w, "no revision of this app has loaded yet", http.StatusServiceUnavailable)
		return
	}
	var mu sync.Mutex
	var warnings []string
	o.Warn = func(host string, err error) {
		mu.Lock()
		defer mu.Unlock()
		warnings = append(warnings, strings.Join(strings.Fields(host+": "+err.Error()), " "))
	}
	ctx, cancel := context.WithTimeout(r.Context(), logsTimeout)
	defer cancel()
	var body bytes.Buffer
	err = src.Logs(ctx, o, &body)
	switch {
	case errors.Is(err, reconcile.ErrUnknownTarget):
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusGatewayTimeout)
		return
	}
	mu.Lock()
	for _, s := range warnings {
		w.Header().Add("X-Capstan-Warning", s)
	}
	mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = body.WriteTo(w)
}
