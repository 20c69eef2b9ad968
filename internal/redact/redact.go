// Package redact masks secret values in text: log lines, errors and recorded
// command output. capstan has exactly one redactor implementation and every
// package that prints, logs or stores text produced from secrets goes
// through it.
//
// A Redactor is built from the secret values themselves. Every occurrence of
// every secret is masked, including occurrences that overlap each other and
// secrets that are substrings of other secrets: the byte ranges covered by
// any match are united and each maximal run is replaced by a single [Mask].
// Matching is on bytes, so invalid UTF-8 is handled like any other input.
//
// Short secrets: every non-empty secret is masked, whatever its length,
// because a secret that is not masked is a leak. A one- or two-byte secret
// therefore masks a lot of unrelated text; catching such values is the job of
// the configuration validator (see [Redactor.Short]), not of the redactor.
//
// Guarantee (fuzzed): after redaction, every occurrence of a secret in the
// output overlaps at least one inserted mask. In particular a secret that is
// not a substring of "[REDACTED]" plus neighbouring text never survives.
//
// The zero value and a nil *Redactor are valid and mask nothing.
package redact

import (
	"bytes"
	"slices"
	"strings"
)

// Mask replaces each maximal run of secret bytes.
const Mask = "[REDACTED]"

// ShortSecretLen is the length below which [Redactor.Short] reports a secret
// as too short to be masked without hiding unrelated text.
const ShortSecretLen = 4

// Redactor masks a fixed set of secret values. It is immutable and safe for
// concurrent use.
type Redactor struct {
	secrets []string // non-empty, deduplicated, longest first
	maxLen  int
}

// New returns a Redactor for the given secret values. Empty strings are
// ignored (they match nothing); duplicates are removed.
func New(secrets ...string) *Redactor {
	r := &Redactor{}
	seen := make(map[string]bool, len(secrets))
	for _, s := range secrets {
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		r.secrets = append(r.secrets, s)
		r.maxLen = max(r.maxLen, len(s))
	}
	slices.SortFunc(r.secrets, func(a, b string) int { return len(b) - len(a) })
	return r
}

// With returns a new Redactor that masks r's secrets and the given ones.
// r is not modified; a nil r is treated as empty.
func (r *Redactor) With(secrets ...string) *Redactor {
	if r == nil {
		return New(secrets...)
	}
	return New(append(slices.Clone(r.secrets), secrets...)...)
}

// Len reports how many distinct non-empty secrets r masks.
func (r *Redactor) Len() int {
	if r == nil {
		return 0
	}
	return len(r.secrets)
}

// Short returns how many of r's secrets are shorter than ShortSecretLen
// bytes. Such secrets are still masked everywhere (see the package comment);
// callers use this to warn the operator, without printing the values.
func (r *Redactor) Short() int {
	if r == nil {
		return 0
	}
	n := 0
	for _, s := range r.secrets {
		if len(s) < ShortSecretLen {
			n++
		}
	}
	return n
}

// Contains reports whether s contains any of r's secrets. hostexec uses it
// to refuse a remote command line that would carry a secret.
func (r *Redactor) Contains(s string) bool {
	if r == nil {
		return false
	}
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			return true
		}
	}
	return false
}

// span is a half-open byte range [lo, hi).
type span struct{ lo, hi int }

// spans returns the merged, sorted byte ranges of b covered by any
// occurrence of any secret. Adjacent ranges are merged too, so each run
// becomes one mask.
func (r *Redactor) spans(b []byte) []span {
	var out []span
	for _, s := range r.secrets {
		sb := []byte(s)
		for off := 0; off+len(sb) <= len(b); {
			i := bytes.Index(b[off:], sb)
			if i < 0 {
				break
			}
			out = append(out, span{off + i, off + i + len(sb)})
			off += i + 1 // overlapping occurrences too
		}
	}
	if len(out) < 2 {
		return out
	}
	slices.SortFunc(out, func(a, b span) int { return a.lo - b.lo })
	merged := out[:1]
	for _, sp := range out[1:] {
		last := &merged[len(merged)-1]
		if sp.lo <= last.hi {
			last.hi = max(last.hi, sp.hi)
			continue
		}
		merged = append(merged, sp)
	}
	return merged
}

// apply writes b with the given spans masked to dst.
func apply(dst, b []byte, spans []span) []byte {
	prev := 0
	for _, sp := range spans {
		dst = append(dst, b[prev:sp.lo]...)
		dst = append(dst, Mask...)
		prev = sp.hi
	}
	return append(dst, b[prev:]...)
}

// Bytes returns b with every secret masked. When nothing is masked, b itself
// is returned (not a copy).
func (r *Redactor) Bytes(b []byte) []byte {
	if r == nil || len(r.secrets) == 0 {
		return b
	}
	sp := r.spans(b)
	if len(sp) == 0 {
		return b
	}
	return apply(make([]byte, 0, len(b)+len(sp)*len(Mask)), b, sp)
}

// String returns s with every secret masked.
func (r *Redactor) String(s string) string {
	if r == nil || len(r.secrets) == 0 || !r.Contains(s) {
		return s
	}
	return string(r.Bytes([]byte(s)))
}

// Strings returns a copy of ss with every element redacted.
func (r *Redactor) Strings(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = r.String(s)
	}
	return out
}
