package daemon

import (
	"html/template"
	"net/http"
	"sort"
	"time"

	"github.com/capstan-dev/capstan/state"
)

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"dur": func(p state.Pass) string { return p.Duration().Round(time.Millisecond).String() },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="5">
<title>capstan</title>
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:0;padding:1rem;background:#f6f7f9;color:#1d2330}
h1{font-size:1.3rem;margin:0 0 1rem} h2{font-size:1.1rem;margin:.2rem 0}
.app{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:1rem;margin-bottom:1rem}
.ok{color:#137333}.bad{color:#b3261e}.warn{color:#a15c00}
table{border-collapse:collapse;width:100%;font-size:.9rem} td,th{text-align:left;padding:.25rem .4rem;border-top:1px solid #eef0f3;vertical-align:top}
code{font-size:.85rem} .muted{color:#5f6773} pre{white-space:pre-wrap;font-size:.8rem;margin:.2rem 0}
@media (max-width:600px){td,th{display:block;border:0;padding:.1rem 0}tr{display:block;border-top:1px solid #eef0f3;padding:.3rem 0}}
</style></head><body>
<h1>capstan</h1>
{{range .}}<section class="app" id="app-{{.App}}">
<h2>{{.App}} <span class="muted">{{.Branch}} · {{.Repo}}</span> <a class="logs" href="/api/v1/apps/{{.App}}/logs">logs</a></h2>
<p>revision <code>{{short .Revision}}</code> · version <b class="version">{{.Version}}</b> ·
last pass <span class="{{if eq .LastOutcome "failed" "invalid" "untrusted"}}bad{{else if eq .LastOutcome "partial" "waiting_image" "window_closed"}}warn{{else}}ok{{end}} outcome">{{.LastOutcome}}</span> {{ago .LastPass}}{{if .Running}} · <span class="warn">deploying…</span>{{end}}</p>
{{with .Window}}<p class="warn window">deploy window closed: {{.Reason}}{{if not .Opens.IsZero}}; opens {{.Opens.Format "2006-01-02 15:04 MST"}}{{end}}</p>{{end}}
{{with .Waiting}}<p class="warn waiting">waiting for <code>{{.Image}}</code> in its registry since {{ago .Since}}: {{.Reason}}</p>{{end}}
{{if .Prepulled}}<p class="prepulled">pre-pulled: {{range $i, $p := .Prepulled}}{{if $i}}, {{end}}<code>{{$p.Version}}</code> on {{$p.Host}} <span class="{{if eq $p.Outcome "pulled" "present"}}ok{{else}}warn{{end}}">{{$p.Outcome}}</span>{{if $p.Reason}} ({{$p.Reason}}){{end}}{{end}}</p>{{end}}
{{if .Pending}}<p class="warn pending">not yet at this revision: {{range $i, $h := .Pending}}{{if $i}}, {{end}}{{$h}}{{end}}</p>{{end}}
{{if .LastError}}<pre class="bad">{{.LastError}}</pre>{{end}}
<table><tr><th>host</th><th>state</th></tr>
{{$app := .}}{{range .Hosts}}<tr class="host"><td>{{.}}</td><td>{{$h := .}}{{$n := 0}}{{range $app.Drift}}{{if eq .Host $h}}<div class="warn drift">{{.Kind}}: {{.Detail}}</div>{{end}}{{end}}</td></tr>{{end}}
</table>
<h3>open drift</h3>
{{if .Open}}<table>{{range .Open}}<tr class="drift-episode"><td>{{.Host}}</td><td class="warn">{{.Kind}}</td><td>{{.Detail}}</td><td class="muted">since {{ago .Opened}}</td></tr>{{end}}</table>{{else}}<p class="ok">none</p>{{end}}
<h3>recent passes</h3>
<table>{{range .Passes}}<tr class="pass"><td>#{{.ID}}</td><td class="who">{{.Who}}</td><td><code>{{short .Revision}}</code> {{.Version}}</td><td class="{{if eq .Outcome "failed" "invalid" "untrusted"}}bad{{else}}ok{{end}}">{{.Outcome}}</td><td>{{dur .}}</td><td class="muted">{{ago .Started}}</td></tr>
{{if .Error}}<tr><td colspan="6"><pre class="bad">{{.Error}}</pre></td></tr>{{end}}
{{range .Steps}}<tr><td></td><td colspan="5" class="muted">{{.Host}}: {{.Step}} <span class="{{if eq .Result "ok"}}ok{{else}}bad{{end}}">{{.Result}}</span>{{if .Error}}<pre>{{.Error}}</pre>{{end}}{{if .Logs}}<pre>{{.Logs}}</pre>{{end}}</td></tr>{{end}}
{{end}}</table>
</section>{{end}}
</body></html>`))

// statusPage renders every app, its hosts, open drift and recent passes;
// the page refreshes itself every 5 s.
func (d *Daemon) statusPage(w http.ResponseWriter, r *http.Request) {
	var views []appView
	owners := d.owners(r.Context())
	for _, n := range d.order {
		views = append(views, d.view(r.Context(), d.apps[n], 10, owners))
	}
	sort.SliceStable(views, func(i, j int) bool { return views[i].App < views[j].App })
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := statusTmpl.Execute(w, views); err != nil {
		d.log.Error("status page", "err", err)
	}
}
