package kamal

import (
	"fmt"
	"io"
	"strings"

	"github.com/capstan-dev/capstan/internal/redact"
)

// WriteSummary writes a short human summary of c: service, image and
// version with its source, roles with hosts, accessories, release jobs, and the keys
// capstan ignores. It contains no secret values.
func (c *Config) WriteSummary(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "service: %s\n", c.Service)
	if c.Destination != "" {
		fmt.Fprintf(&b, "destination: %s\n", c.Destination)
	}
	fmt.Fprintf(&b, "image: %s\n", c.Image())
	fmt.Fprintf(&b, "version: %s (from %s)\n", c.Version.Value, c.Version.Source)
	if len(c.Roles) > 0 {
		b.WriteString("roles:\n")
	}
	for _, r := range c.Roles {
		var notes []string
		if r.Name == c.PrimaryRole {
			notes = append(notes, "primary")
		}
		if r.Proxy != nil {
			notes = append(notes, "proxied")
		}
		note := ""
		if len(notes) > 0 {
			note = " (" + strings.Join(notes, ", ") + ")"
		}
		fmt.Fprintf(&b, "  %s%s: %s\n", r.Name, note, strings.Join(r.Hosts, ", "))
	}
	if len(c.Accessories) > 0 {
		b.WriteString("accessories:\n")
	}
	for _, a := range c.Accessories {
		fmt.Fprintf(&b, "  %s (%s): %s\n", a.Name, a.Service, strings.Join(a.Hosts, ", "))
	}
	if len(c.Capstan.Jobs) > 0 {
		b.WriteString("release jobs:\n")
	}
	for _, j := range c.Capstan.Jobs {
		fmt.Fprintf(&b, "  %s (%s, %s on %s, timeout %s): %s\n", j.Name, j.When, j.Role, strings.Join(c.JobHosts(j), ", "), j.Timeout, ShellJoin(j.Cmd))
	}
	if len(c.Ignored) > 0 {
		fmt.Fprintf(&b, "ignored (build-time or local-only): %s\n", strings.Join(c.Ignored, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteYAML writes the merged configuration (base file with the
// destination file merged over it, anchors and merge keys resolved) as
// YAML. Literal registry credentials and any scalar the redactor would
// mask something in (a long secret anywhere in it, a short one standing
// alone: see package redact) are replaced by Redacted as a whole.
func (c *Config) WriteYAML(w io.Writer) error {
	red := redact.New(c.SecretValues()...)
	return encodeYAML(w, c.merged, func(path, v string) string {
		if strings.HasSuffix(path, "registry.password") || strings.HasSuffix(path, "registry.username") && c.Registry.Username.ref != "" {
			return Redacted
		}
		if red.Contains(v) {
			return Redacted
		}
		return v
	})
}
