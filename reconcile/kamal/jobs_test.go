package kamal

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const jobsServers = `servers:
  web:
    hosts:
      - 1.1.1.1
      - 1.1.1.2
  worker:
    hosts:
      - 1.1.1.3
`

func TestConfig_Jobs(t *testing.T) {
	c := loadExec(t, jobsServers+`x-capstan:
  jobs:
    - name: migrate
      role: web
      cmd: bin/rails db:migrate
      timeout: 90s
    - name: warm-cache
      when: post_deploy
      role: worker
      cmd: bin/warm
      host: all
      timeout: 30
    - name: seed
      role: web
      cmd: sh -c 'echo seeded'
      host: all
`, LoadOptions{})
	pre := c.Jobs(JobPreDeploy)
	if len(pre) != 2 || pre[0].Name != "migrate" || pre[1].Name != "seed" {
		t.Fatalf("pre_deploy jobs %+v", pre)
	}
	m := pre[0]
	if m.Role != "web" || !reflect.DeepEqual(m.Cmd, []string{"bin/rails", "db:migrate"}) || m.AllHosts || m.Timeout != 90*time.Second || m.File != "config/deploy.yml" || m.Line != 19 {
		t.Errorf("migrate %+v", m)
	}
	if h := c.JobHosts(m); !reflect.DeepEqual(h, []string{"1.1.1.1"}) {
		t.Errorf("migrate hosts %v", h)
	}
	if h := c.JobHosts(pre[1]); !reflect.DeepEqual(h, []string{"1.1.1.1", "1.1.1.2"}) {
		t.Errorf("seed hosts %v", h)
	}
	if !reflect.DeepEqual(pre[1].Cmd, []string{"sh", "-c", "echo seeded"}) {
		t.Errorf("seed cmd %q", pre[1].Cmd)
	}
	if pre[1].Timeout != DefaultJobTimeout {
		t.Errorf("default timeout %s", pre[1].Timeout)
	}
	var sum strings.Builder
	if err := c.WriteSummary(&sum); err != nil || !strings.Contains(sum.String(), "release jobs:\n  migrate (pre_deploy, web on 1.1.1.1, timeout 1m30s): bin/rails db:migrate\n") {
		t.Errorf("summary %v:\n%s", err, sum.String())
	}
	post := c.Jobs(JobPostDeploy)
	if len(post) != 1 || post[0].Name != "warm-cache" || post[0].Timeout != 30*time.Second || !post[0].AllHosts {
		t.Errorf("post_deploy jobs %+v", post)
	}
}

// TestConfig_JobsInvalid checks that every problem comes back at once,
// each with its file, line and key.
func TestConfig_JobsInvalid(t *testing.T) {
	cfg := execConfig + jobsServers + `x-capstan:
  jobs:
    - name: Migrate_1
      role: web
      cmd: bin/rails db:migrate
    - name: ok
      when: sometimes
      role: db
      cmd: true
      host: some
      timeout: forever
      retries: 3
    - role: web
    - name: ok
      role: web
      cmd: echo a > b
    - just-a-string
`
	_, err := load(t, map[string]string{"config/deploy.yml": cfg, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\n"}, LoadOptions{})
	if err == nil {
		t.Fatal("no error")
	}
	type want struct {
		line int
		path string
	}
	wants := []want{
		{19, "x-capstan.jobs[0].name"},
		{23, "x-capstan.jobs[1].when"},
		{24, "x-capstan.jobs[1].role"},
		{26, "x-capstan.jobs[1].host"},
		{27, "x-capstan.jobs[1].timeout"},
		{28, "x-capstan.jobs[1].retries"},
		{29, "x-capstan.jobs[2].name"},
		{29, "x-capstan.jobs[2].cmd"},
		{32, "x-capstan.jobs[3].cmd"},
		{33, "x-capstan.jobs[4]"},
	}
	es := asErrors(t, err)
	got := map[want]bool{}
	for _, e := range es {
		if !errors.Is(e, ErrInvalid) || e.File != "config/deploy.yml" {
			t.Errorf("%v: kind or file", e)
		}
		got[want{e.Line, e.Path}] = true
	}
	for _, w := range wants {
		if !got[w] {
			t.Errorf("missing error at line %d %s; got:\n%v", w.line, w.path, err)
		}
	}
	if !strings.Contains(err.Error(), "config/deploy.yml:24: x-capstan.jobs[1].role: no role \"db\"") {
		t.Errorf("error text: %v", err)
	}
}

func TestConfig_JobsDuplicate(t *testing.T) {
	_, err := load(t, map[string]string{"config/deploy.yml": execConfig + jobsServers + `x-capstan:
  jobs:
    - {name: m, role: web, cmd: a}
    - {name: m, role: web, cmd: b}
`, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\n"}, LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "config/deploy.yml:20: x-capstan.jobs[1].name: job \"m\" is defined twice") {
		t.Errorf("err %v", err)
	}
}
