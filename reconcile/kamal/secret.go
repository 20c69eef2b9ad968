package kamal

import (
	"fmt"
	"io"
)

// Redacted is what a Secret prints as.
const Redacted = "[REDACTED]"

// Secret holds a secret value (or text containing secret values, such as
// an env file). Every way of printing it — String, Format with any verb,
// MarshalJSON, MarshalText — yields Redacted (or "" when empty), so it is
// safe to log or serialise structures that contain it. Reveal returns the
// value for the one place that needs it (uploading a file, docker login).
type Secret struct {
	v   string
	set bool
	ref string // secret name when the value came from a secrets file
}

// NewSecret wraps v.
func NewSecret(v string) Secret { return Secret{v: v, set: true} }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return s.v }

// IsSet reports whether a value (possibly empty) is present.
func (s Secret) IsSet() bool { return s.set || s.ref != "" }

// Ref returns the secret name it was looked up under, or "" for literals.
func (s Secret) Ref() string { return s.ref }

func (s Secret) String() string {
	if s.v == "" {
		return ""
	}
	return Redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return fmt.Sprintf("kamal.Secret(%q)", s.String()) }

// Format implements fmt.Formatter for every verb.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(fmt.Sprintf("%q", s.String())), nil }

// MarshalText implements encoding.TextMarshaler (YAML, XML, map keys).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
