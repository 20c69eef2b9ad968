package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/state"
)

// app returns the app the path names, or answers 404 and returns nil.
func (d *Daemon) app(w http.ResponseWriter, r *http.Request) *appRunner {
	a := d.apps[r.PathValue("app")]
	if a == nil {
		http.Error(w, "no such app", http.StatusNotFound)
	}
	return a
}

// apiSync asks for a pass: force=1 retries a failed revision,
// rerun_jobs=1 runs the release jobs again, override=1 deploys through a
// closed deploy window (the token needs the override scope). The pass
// records the token's name.
func (d *Daemon) apiSync(w http.ResponseWriter, r *http.Request) {
	a := d.app(w, r)
	if a == nil {
		return
	}
	q := r.URL.Query()
	yes := func(k string) bool { return q.Get(k) == "1" || q.Get(k) == "true" }
	t := caller(r)
	req := reconcile.Request{Kind: reconcile.TriggerManual, By: "token:" + t.name,
		Force: yes("force"), RerunJobs: yes("rerun_jobs"), Override: yes("override")}
	if t == anonymous {
		req.By = "anonymous"
	}
	if req.Override && !t.may(ScopeOverride) {
		http.Error(w, fmt.Sprintf("token %s lacks the %s scope", t.name, ScopeOverride), http.StatusForbidden)
		return
	}
	d.request(a, req)
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"app": a.cfg.Name, "force": req.Force || req.RerunJobs || req.Override,
		"rerun_jobs": req.RerunJobs, "override": req.Override, "by": req.By, "queued": true})
}

// appView is an app as the API and the status page show it.
type appView struct {
	reconcile.LoopStatus
	Repo   string          `json:"repo"`
	Branch string          `json:"branch"`
	Passes []state.Pass    `json:"passes,omitempty"`
	Open   []state.Episode `json:"open_drift"`
	// Prepulled are the versions pulled onto hosts ahead of their deploy,
	// and the hosts where a pre-pull was skipped or failed (with why).
	Prepulled []state.Prepull `json:"prepulled,omitempty"`
	// Owner is the replica reconciling the app, when replicas share the
	// store; a replica that is not the owner shows the app's last pass
	// from the store.
	Owner string `json:"owner,omitempty"`
}

// view is a's status with its open drift and its last passes passes;
// owners is d.owners.
func (d *Daemon) view(ctx context.Context, a *appRunner, passes int, owners map[string]string) appView {
	v := appView{LoopStatus: a.loop.Status(), Repo: a.cfg.Repo, Branch: a.cfg.Branch, Owner: owners[a.cfg.Name]}
	if !d.here(a) {
		v.LoopStatus = d.storedStatus(ctx, a.cfg.Name)
	}
	v.Open, _ = d.store.OpenDrift(ctx, a.cfg.Name)
	if recs, err := d.store.Prepulls(ctx, a.cfg.Name); err == nil {
		for _, r := range recs {
			if r.Version != v.Version {
				v.Prepulled = append(v.Prepulled, r)
			}
		}
	}
	if passes > 0 {
		v.Passes, _ = d.store.History(ctx, a.cfg.Name, passes)
	}
	return v
}

func (d *Daemon) apiApps(w http.ResponseWriter, r *http.Request) {
	var out []appView
	owners := d.owners(r.Context())
	for _, n := range d.order {
		out = append(out, d.view(r.Context(), d.apps[n], 0, owners))
	}
	writeJSON(w, out)
}

func (d *Daemon) apiApp(w http.ResponseWriter, r *http.Request) {
	if a := d.app(w, r); a != nil {
		writeJSON(w, d.view(r.Context(), a, 10, d.owners(r.Context())))
	}
}

func (d *Daemon) apiHistory(w http.ResponseWriter, r *http.Request) {
	if a := d.app(w, r); a != nil {
		h, err := d.store.History(r.Context(), a.cfg.Name, 100)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, h)
	}
}

func (d *Daemon) apiDrift(w http.ResponseWriter, r *http.Request) {
	eps, err := d.store.OpenDrift(r.Context(), r.URL.Query().Get("app"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, eps)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
