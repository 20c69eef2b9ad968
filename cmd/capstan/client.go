package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/capstan-dev/capstan/state"
)

func init() {
	register(command{name: "status", summary: "apps, hosts, versions and open drift, from a running capstan serve", run: runStatus})
	register(command{name: "history", summary: "recent passes of an app (or all apps), from a running capstan serve", run: runHistory})
	register(command{name: "drift", summary: "open drift episodes, from a running capstan serve", run: runDrift})
}

// apiFlags address the daemon's API.
type apiFlags struct {
	server, token string
	json          bool
}

func (f *apiFlags) register(fs *flag.FlagSet, e *env) {
	fs.StringVar(&f.server, "server", envOr("CAPSTAN_SERVER", "http://127.0.0.1:9740"), "address of capstan serve (env CAPSTAN_SERVER)")
	fs.StringVar(&f.token, "token", e.getenv("CAPSTAN_API_TOKEN"), "API bearer token (env CAPSTAN_API_TOKEN)")
	fs.BoolVar(&f.json, "json", false, "print the API's JSON")
}

// get fetches path from the API into v, or copies it to w raw when v is nil.
func (f *apiFlags) get(ctx context.Context, path string, v any, raw io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(f.server, "/")+path, nil)
	if err != nil {
		return usageError("--server: %v", err)
	}
	if f.token != "" {
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("capstan serve at %s: %w", f.server, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return fmt.Errorf("capstan serve at %s: %s: it needs its API token (--token or CAPSTAN_API_TOKEN)", f.server, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("capstan serve at %s: %s: %s", f.server, resp.Status, strings.TrimSpace(string(body)))
	}
	if raw != nil {
		_, err := raw.Write(body)
		return err
	}
	return json.Unmarshal(body, v)
}

// apiApp is the part of GET /api/v1/apps the CLI prints.
type apiApp struct {
	App         string          `json:"app"`
	Revision    string          `json:"revision"`
	Version     string          `json:"version"`
	LastPass    time.Time       `json:"last_pass"`
	LastOutcome string          `json:"last_outcome"`
	LastError   string          `json:"last_error"`
	Running     bool            `json:"running"`
	Hosts       []string        `json:"hosts"`
	Unreachable []string        `json:"unreachable"`
	Open        []state.Episode `json:"open_drift"`
	Waiting     *struct {
		Image  string    `json:"image"`
		Since  time.Time `json:"since"`
		Reason string    `json:"reason"`
	} `json:"waiting_image"`
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func runStatus(ctx context.Context, e *env, args []string) error {
	var f apiFlags
	fs := newFlagSet(e, "status", "[--server URL] [--json]")
	f.register(fs, e)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if f.json {
		return f.get(ctx, "/api/v1/apps", nil, e.stdout)
	}
	var apps []apiApp
	if err := f.get(ctx, "/api/v1/apps", &apps, nil); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tVERSION\tREVISION\tLAST PASS\tOUTCOME\tHOSTS\tUNREACHABLE\tOPEN DRIFT")
	for _, a := range apps {
		outcome := a.LastOutcome
		switch {
		case a.Waiting != nil:
			outcome = "waiting_image (" + strings.TrimSuffix(ago(a.Waiting.Since), " ago") + ")"
		case a.Running:
			outcome = "deploying…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", a.App, a.Version, short(a.Revision), ago(a.LastPass), outcome, len(a.Hosts), len(a.Unreachable), len(a.Open))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, a := range apps {
		for _, d := range a.Open {
			fmt.Fprintf(e.stdout, "drift %s %s %s: %s (since %s)\n", a.App, d.Host, d.Kind, d.Detail, ago(d.Opened))
		}
		if a.Waiting != nil {
			fmt.Fprintf(e.stdout, "%s waiting for %s: %s\n", a.App, a.Waiting.Image, a.Waiting.Reason)
		}
		if a.LastError != "" {
			fmt.Fprintf(e.stdout, "%s last error: %s\n", a.App, firstLine(a.LastError))
		}
	}
	return nil
}

func runHistory(ctx context.Context, e *env, args []string) error {
	var f apiFlags
	fs := newFlagSet(e, "history", "[APP] [--server URL] [--json]")
	f.register(fs, e)
	names, help, err := parseInterleaved(fs, args)
	if help || err != nil {
		return err
	}
	if len(names) == 0 {
		var apps []apiApp
		if err := f.get(ctx, "/api/v1/apps", &apps, nil); err != nil {
			return err
		}
		for _, a := range apps {
			names = append(names, a.App)
		}
	}
	for _, name := range names {
		path := "/api/v1/apps/" + url.PathEscape(name) + "/history"
		if f.json {
			if err := f.get(ctx, path, nil, e.stdout); err != nil {
				return err
			}
			continue
		}
		var passes []state.Pass
		if err := f.get(ctx, path, &passes, nil); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "APP\tPASS\tSTARTED\tTRIGGER\tREVISION\tVERSION\tOUTCOME\tTOOK")
		for _, p := range passes {
			fmt.Fprintf(tw, "%s\t#%d\t%s\t%s\t%s\t%s\t%s\t%s\n", name, p.ID, p.Started.Local().Format("2006-01-02 15:04:05"), p.Who(), short(p.Revision), p.Version, p.Outcome, p.Duration().Round(time.Millisecond))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		writeStepOutput(e.stdout, passes)
	}
	return nil
}

// writeStepOutput prints, under the history table, the steps that kept
// output (a release job's, a failed container's last log lines), already
// masked by the daemon.
func writeStepOutput(w io.Writer, passes []state.Pass) {
	for _, p := range passes {
		for _, st := range p.Steps {
			if st.Logs == "" {
				continue
			}
			fmt.Fprintf(w, "#%d %s: %s: %s", p.ID, st.Host, st.Step, st.Result)
			if st.Error != "" {
				fmt.Fprintf(w, ": %s", st.Error)
			}
			fmt.Fprintln(w)
			for _, l := range strings.Split(strings.TrimRight(st.Logs, "\n"), "\n") {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
}

func runDrift(ctx context.Context, e *env, args []string) error {
	var f apiFlags
	fs := newFlagSet(e, "drift", "[APP] [--server URL] [--json]")
	f.register(fs, e)
	apps, help, err := parseInterleaved(fs, args)
	if help || err != nil {
		return err
	}
	path := "/api/v1/drift"
	if len(apps) > 0 {
		path += "?app=" + url.QueryEscape(apps[0])
	}
	if f.json {
		return f.get(ctx, path, nil, e.stdout)
	}
	var eps []state.Episode
	if err := f.get(ctx, path, &eps, nil); err != nil {
		return err
	}
	if len(eps) == 0 {
		fmt.Fprintln(e.stdout, "no open drift")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tHOST\tKIND\tSINCE\tDETAIL")
	for _, d := range eps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.App, d.Host, d.Kind, ago(d.Opened), d.Detail)
	}
	return tw.Flush()
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
