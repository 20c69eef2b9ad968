// Package redact masks secret values in text: log lines, errors and recorded
// command output. capstan has exactly one redactor implementation and every
// package that prints, logs or stores text produced from secrets goes
// through it.
//
// A Redactor is built from the secret values themselves. Occurrences that
// overlap each other and secrets that are substrings of other secrets are
// all masked: the byte ranges covered by masked occurrences are united and
// each maximal run is replaced by a single [Mask]. Matching is on bytes, so
// invalid UTF-8 is handled like any other input.
//
// Long secrets (at least [ShortSecretLen] bytes) are masked wherever they
// occur, inside words too.
//
// Short secrets (1 to ShortSecretLen-1 bytes) are masked only where they
// stand alone, as a whole value: masking every occurrence of "x" or "pw1"
// would turn "proxy:" into "pro[REDACTED]y:" and every host name into
// noise, and would tell a reader which letters the secret is made of. An
// occurrence b[i:j] stands alone when neither neighbour continues a word:
//
//   - the left neighbour is b[i-1] (none at the start of the text), the
//     right one b[j] (none at the end);
//   - a word byte is an ASCII letter or digit, '_', or any byte >= 0x80 (a
//     part of a non-ASCII character);
//   - a neighbour continues a word when it is a word byte, or when it is '.'
//     or '-' and the byte beyond it (b[i-2], resp. b[j+1]) is a word byte.
//
// So a whole string (an argv element, an env value, a log attribute value),
// and a token delimited by the start or end of the text, white space,
// quotes, '=', ':', ',', '/', '@', brackets and the like are masked:
// "PASSWORD=x", `"x"`, "--password x", "key: x", "[x]" and the sentence
// "password is x." all lose their x. Host names, image tags, versions and
// identifiers are words: "x.example", "x-ray", "v1.x", "proxy" and "KEY_x"
// keep theirs. The rule reads at most two bytes on each side of an
// occurrence, which is what lets [Writer] decide on a stream. The price is
// that a short secret written inside a word is not masked; the
// configuration validator warns about short secrets for that reason
// (`capstan validate`), without printing them.
//
// Guarantee (fuzzed against a naive model): every occurrence of a long
// secret, and every standing-alone occurrence of a short secret, in the
// input lies inside a masked run; nothing else is masked.
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

// ShortSecretLen is the length in bytes below which a secret is short: it
// is masked only where it stands alone (see the package comment), and
// [Redactor.Short] counts it so the operator can be warned.
const ShortSecretLen = 6

// lookaround is how many bytes on each side of an occurrence decide
// whether a short secret stands alone.
const lookaround = 2

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
// bytes, and so are masked only where they stand alone (see the package
// comment). Callers use it to warn the operator, without printing values.
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

// Contains reports whether String(s) would mask anything: s contains a
// long secret, or a short one standing alone. hostexec uses it to refuse a
// remote command line that would carry a secret.
func (r *Redactor) Contains(s string) bool {
	if r == nil {
		return false
	}
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			return len(r.spans([]byte(s), 0)) > 0
		}
	}
	return false
}

// span is a half-open byte range [lo, hi).
type span struct{ lo, hi int }

// wordByte reports whether c is part of a word: an ASCII letter or digit,
// '_', or a byte of a non-ASCII character.
func wordByte(c byte) bool {
	return c >= 0x80 || c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// continuesWord reports whether the neighbour b[i] of an occurrence
// continues a word; beyond is the index of the byte past it (i-1 on the
// left, i+1 on the right). Indexes outside b are the ends of the text.
func continuesWord(b []byte, i, beyond int) bool {
	if i < 0 || i >= len(b) {
		return false
	}
	c := b[i]
	if c == '.' || c == '-' {
		return beyond >= 0 && beyond < len(b) && wordByte(b[beyond])
	}
	return wordByte(c)
}

// standsAlone reports whether the occurrence b[lo:hi] is delimited on both
// sides (see the package comment).
func standsAlone(b []byte, lo, hi int) bool {
	return !continuesWord(b, lo-1, lo-2) && !continuesWord(b, hi, hi+1)
}

// spans returns the merged, sorted byte ranges of b covered by masked
// occurrences that start at or after from; b[:from] is context already
// dealt with (the Writer's emitted tail). The end of b is taken as the end
// of the text. Adjacent ranges are merged too, so each run becomes one
// mask.
func (r *Redactor) spans(b []byte, from int) []span {
	var out []span
	for _, s := range r.secrets {
		sb := []byte(s)
		for off := from; off+len(sb) <= len(b); {
			i := bytes.Index(b[off:], sb)
			if i < 0 {
				break
			}
			lo, hi := off+i, off+i+len(sb)
			if len(sb) >= ShortSecretLen || standsAlone(b, lo, hi) {
				out = append(out, span{lo, hi})
			}
			off = lo + 1 // overlapping occurrences too
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
	sp := r.spans(b, 0)
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
