package simfleet

import (
	"encoding/json"
	"strings"
	"text/template"
	"time"
)

// The docker CLI renders --format with Go templates over its own types;
// the sim does the same over the shapes below, so a format capstan
// changes is rendered as dockerd would (or fails as a template error,
// which the test sees).

var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join":  strings.Join,
	"split": strings.Split,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
}

// render executes the docker --format template text over v.
func render(text string, v any) (string, error) {
	t, err := template.New("format").Funcs(templateFuncs).Parse(text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, v); err != nil {
		return "", err
	}
	return b.String(), nil
}

// psRow is a container as `docker ps --format` sees it.
type psRow struct {
	ID, Names, Image, State, Status, CreatedAt, Labels, Networks, Command, Ports, Size, RunningFor, Mounts string
	labels                                                                                                 map[string]string
}

// Label is the value of label k ("" when unset).
func (r psRow) Label(k string) string { return r.labels[k] }

func (c *Container) psRow() psRow {
	return psRow{ID: c.ID, Names: c.Name, Image: c.Image, State: c.State, Status: c.status(),
		CreatedAt: c.Created.UTC().Format("2006-01-02 15:04:05 -0700 MST"), Labels: c.labelList(),
		Networks: strings.Join(c.Networks, ","), Command: `"/bin/app"`, RunningFor: humanSince(c.Created) + " ago",
		labels: c.Labels}
}

// inspect is the container as `docker inspect` and GET
// /containers/{id}/json show it.
func (c *Container) inspect() map[string]any {
	var health any
	if c.Health != "" {
		health = map[string]any{"Status": c.Health, "FailingStreak": 0, "Log": []any{}}
	}
	networks := map[string]any{}
	for _, n := range c.Networks {
		ip := ""
		if n == "kamal" {
			ip = c.IP
		}
		networks[n] = map[string]any{"IPAddress": ip, "NetworkID": n, "Aliases": []string{c.Name}}
	}
	started := "0001-01-01T00:00:00Z"
	if !c.StartedAt.IsZero() {
		started = c.StartedAt.UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{
		"Id": c.ID, "Name": "/" + c.Name, "Image": imageID(c), "Created": c.Created.UTC().Format(time.RFC3339Nano),
		"RestartCount": 0,
		"State": map[string]any{"Status": c.State, "Running": c.State == "running", "ExitCode": c.ExitCode,
			"StartedAt": started, "Health": health},
		"Config":          map[string]any{"Image": c.Image, "Labels": c.Labels},
		"NetworkSettings": map[string]any{"Networks": networks},
	}
}

// imageID is the ID of the image a container runs (its reference when
// the sim has lost it).
func imageID(c *Container) string { return "sha256:" + hashHex(c.Image) }

// apiSummary is the container as GET /containers/json lists it.
func (c *Container) apiSummary() map[string]any {
	networks := map[string]any{}
	for _, n := range c.Networks {
		ip := ""
		if n == "kamal" {
			ip = c.IP
		}
		networks[n] = map[string]any{"IPAddress": ip}
	}
	return map[string]any{"Id": c.ID, "Names": []string{"/" + c.Name}, "Image": c.Image, "State": c.State,
		"Status": c.status(), "Created": c.Created.Unix(), "Labels": c.Labels,
		"NetworkSettings": map[string]any{"Networks": networks}}
}

// inspect is the image as `docker image inspect` and GET
// /images/{name}/json show it.
func (im *image) inspect() map[string]any {
	return map[string]any{"Id": im.id, "RepoTags": []string{im.ref}, "RepoDigests": []string{im.digest},
		"Config": map[string]any{"Labels": im.labels}, "Size": 0}
}

// networkView is the network as `docker network inspect` shows it.
func (s *hostState) networkView(name string) map[string]any {
	members := map[string]any{}
	for _, c := range s.containers {
		if c.State == "running" && c.IP != "" && name == "kamal" {
			members[c.ID] = map[string]any{"Name": c.Name, "IPv4Address": c.IP + "/16"}
		}
	}
	return map[string]any{"Name": name, "Id": s.networks[name], "Driver": "bridge", "Containers": members}
}
