package kamal

import (
	"regexp"
	"slices"
	"strings"
	"time"
)

// Job is one release job of x-capstan.jobs: a command run in a one-off
// container of a role's image (ExecRun) around a deploy of a new version.
type Job struct {
	Name string // [a-z0-9-]+, unique
	// When is JobPreDeploy (before any container of the new version
	// boots; a failure fails the release) or JobPostDeploy (after every
	// host switched; a failure is reported, nothing rolls back).
	When JobWhen
	// Role gives the image, env, env file, logging, options and volumes.
	Role string
	// Cmd is the command after the image, as argv.
	Cmd []string
	// AllHosts runs the job on every host of the role (host: all) instead
	// of its primary (first) host.
	AllHosts bool
	// Timeout bounds one run; the container is then killed and removed.
	Timeout time.Duration
	// File and Line locate the job in the configuration.
	File string
	Line int
}

// JobWhen is when a release job runs.
type JobWhen string

// The moments of a release job.
const (
	JobPreDeploy  JobWhen = "pre_deploy"
	JobPostDeploy JobWhen = "post_deploy"
)

// Limits of a release job's timeout.
const (
	DefaultJobTimeout = 10 * time.Minute
	MaxJobTimeout     = 24 * time.Hour
)

var reJobName = regexp.MustCompile(`^[a-z0-9-]+$`)

var jobKeys = []string{"name", "when", "role", "cmd", "host", "timeout"}

// Jobs returns the release jobs that run at when, in configuration order.
func (c *Config) Jobs(when JobWhen) []Job {
	var out []Job
	for _, j := range c.Capstan.Jobs {
		if j.When == when {
			out = append(out, j)
		}
	}
	return out
}

// JobHosts returns the hosts job runs on: the role's first host, or all
// of them (host: all).
func (c *Config) JobHosts(j Job) []string {
	r := c.Role(j.Role)
	if r == nil || len(r.Hosts) == 0 {
		return nil
	}
	if j.AllHosts {
		return r.Hosts
	}
	return r.Hosts[:1]
}

// jobs reads x-capstan.jobs (after the roles, which jobs name).
func (b *builder) jobs() {
	n := b.root.get("x-capstan").get("jobs")
	if n == nil {
		return
	}
	if !n.isSeq() {
		b.err(n, "x-capstan.jobs", "should be a list of jobs (found %s)", n.typeName())
		return
	}
	seen := map[string]bool{}
	for i, it := range n.items {
		p := indexPath("x-capstan.jobs", i)
		if !it.isMap() {
			b.err(it, p, "should be a hash with name, role and cmd (found %s)", it.typeName())
			continue
		}
		if j, ok := b.job(it, p); ok {
			if seen[j.Name] {
				b.err(it.get("name"), p+".name", "job %q is defined twice", j.Name)
				continue
			}
			seen[j.Name] = true
			b.c.Capstan.Jobs = append(b.c.Capstan.Jobs, j)
		}
	}
}

// job reads one job map at path p; ok is false when it has errors.
func (b *builder) job(it *node, p string) (j Job, ok bool) {
	before := len(b.errs.errs)
	for i, k := range it.keys {
		if !slices.Contains(jobKeys, k) {
			b.errs.add(ErrInvalid, it.kfiles[i], it.klines[i], joinPath(p, k), "unknown key (a job has: %s)", strings.Join(jobKeys, ", "))
		}
	}
	j = Job{When: JobPreDeploy, Timeout: DefaultJobTimeout, File: it.file, Line: it.line}
	str := func(k string) (string, *node) {
		v := it.get(k)
		if v == nil {
			return "", nil
		}
		if !v.isScalar() {
			b.err(v, joinPath(p, k), "should be a string (found %s)", v.typeName())
			return "", nil
		}
		return scalarString(v), v
	}
	name, nn := str("name")
	switch {
	case nn == nil && !it.has("name"):
		b.missing(it, p+".name")
	case nn != nil && !reJobName.MatchString(name):
		b.err(nn, p+".name", "%q: a job name is lower-case letters, digits and hyphens", name)
	}
	j.Name = name
	if w, wn := str("when"); wn != nil {
		switch JobWhen(w) {
		case JobPreDeploy, JobPostDeploy:
			j.When = JobWhen(w)
		default:
			b.err(wn, p+".when", "%q: want pre_deploy or post_deploy", w)
		}
	}
	role, rn := str("role")
	switch {
	case rn == nil && !it.has("role"):
		b.missing(it, p+".role")
	case rn != nil && b.c.Role(role) == nil:
		b.err(rn, p+".role", "no role %q in servers", role)
	}
	j.Role = role
	if _, cn := str("cmd"); cn != nil {
		j.Cmd = b.cmdArgs(cn, p+".cmd")
		if len(j.Cmd) == 0 {
			b.err(cn, p+".cmd", "must not be empty")
		}
	} else if !it.has("cmd") {
		b.missing(it, p+".cmd")
	}
	if h, hn := str("host"); hn != nil {
		switch h {
		case "primary":
		case "all":
			j.AllHosts = true
		default:
			b.err(hn, p+".host", "%q: want primary (the role's first host) or all", h)
		}
	}
	if tn := it.get("timeout"); tn != nil {
		d, err := jobTimeout(tn)
		if err != "" {
			b.err(tn, p+".timeout", "%s", err)
		}
		j.Timeout = d
	}
	return j, len(b.errs.errs) == before
}

// missing reports a required key absent from map m, at m's line.
func (b *builder) missing(m *node, path string) {
	b.errs.add(ErrInvalid, m.file, m.line, path, "missing required configuration")
}

// jobTimeout reads a timeout: a Go duration ("90s", "10m") or a number of
// seconds, from 1 s to MaxJobTimeout.
func jobTimeout(n *node) (time.Duration, string) {
	var d time.Duration
	switch {
	case n.isInt():
		d = time.Duration(n.intValue()) * time.Second
	case n.isScalar():
		var err error
		if d, err = time.ParseDuration(n.str()); err != nil {
			return 0, "should be a duration like 90s or 10m, or a number of seconds"
		}
	default:
		return 0, "should be a duration like 90s or 10m, or a number of seconds"
	}
	if d < time.Second || d > MaxJobTimeout {
		return 0, "should be from 1s to 24h"
	}
	return d, ""
}
