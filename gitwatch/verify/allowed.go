package verify

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// signer is one allowed_signers entry (OpenSSH ssh-keygen(1), "ALLOWED
// SIGNERS"): principals [options] keytype base64key [comment].
type signer struct {
	principals  string   // as written (comma-separated, wildcards kept as text)
	namespaces  []string // nil: any namespace
	validAfter  time.Time
	validBefore time.Time
	key         []byte // wire form of the public key
}

// canonical is the entry without its comment, for telling whether the
// trusted set changed.
func (s signer) canonical() string {
	return fmt.Sprintf("%s %q %d %d %x", s.principals, s.namespaces, s.validAfter.Unix(), s.validBefore.Unix(), s.key)
}

// parseAllowedSigners parses an allowed_signers file. Errors name
// "FILE:LINE". cert-authority entries are left out with a note in notes:
// certificates are not supported.
func parseAllowedSigners(file string, data []byte) (signers []signer, notes []string, err error) {
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		s, ca, err := parseSignerLine(line)
		if err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %w", file, i+1, err)
		}
		if ca {
			notes = append(notes, fmt.Sprintf("%s:%d: cert-authority entry ignored: SSH certificates are not supported", file, i+1))
			continue
		}
		signers = append(signers, s)
	}
	return signers, notes, nil
}

// parseSignerLine parses one non-blank, non-comment line; ca reports a
// cert-authority entry.
func parseSignerLine(line string) (s signer, ca bool, err error) {
	principals, rest, err := cutPrincipals(line)
	if err != nil {
		return s, false, err
	}
	s.principals = principals
	if strings.ContainsAny(rest, "\n") || rest == "" {
		return s, false, errors.New("missing public key")
	}
	pub, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(rest))
	if err != nil {
		return s, false, fmt.Errorf("no valid public key after the principals: %v", err)
	}
	s.key = pub.Marshal()
	for _, o := range opts {
		name, val, hasVal := strings.Cut(o, "=")
		name = strings.ToLower(name)
		if hasVal {
			if val, err = unquoteOption(val); err != nil {
				return s, false, fmt.Errorf("option %s: %w", name, err)
			}
		}
		switch {
		case name == "cert-authority" && !hasVal:
			ca = true
		case name == "namespaces" && hasVal:
			s.namespaces = strings.Split(val, ",")
		case name == "valid-after" && hasVal:
			if s.validAfter, err = parseSignerTime(val); err != nil {
				return s, false, fmt.Errorf("option valid-after: %w", err)
			}
		case name == "valid-before" && hasVal:
			if s.validBefore, err = parseSignerTime(val); err != nil {
				return s, false, fmt.Errorf("option valid-before: %w", err)
			}
		default:
			return s, false, fmt.Errorf("unsupported option %q", name)
		}
	}
	return s, ca, nil
}

// cutPrincipals splits the first field (optionally double-quoted) from
// the rest of the line.
func cutPrincipals(line string) (principals, rest string, err error) {
	if strings.HasPrefix(line, `"`) {
		end := strings.IndexByte(line[1:], '"')
		if end < 0 {
			return "", "", errors.New("unterminated quoted principals")
		}
		principals, rest = line[1:1+end], line[2+end:]
		if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
			return "", "", errors.New("text after the quoted principals")
		}
	} else {
		i := strings.IndexAny(line, " \t")
		if i < 0 {
			return "", "", errors.New("missing public key")
		}
		principals, rest = line[:i], line[i:]
	}
	if principals == "" {
		return "", "", errors.New("empty principals")
	}
	return principals, strings.TrimSpace(rest), nil
}

func unquoteOption(v string) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1], nil
	}
	if strings.Contains(v, `"`) {
		return "", errors.New("unbalanced quote")
	}
	return v, nil
}

// parseSignerTime parses YYYYMMDD[HHMM[SS]][Z]: UTC with the Z, local
// time without, as OpenSSH does.
func parseSignerTime(v string) (time.Time, error) {
	loc := time.Local
	if s, ok := strings.CutSuffix(v, "Z"); ok {
		v, loc = s, time.UTC
	}
	layouts := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(v)]
	if !ok {
		return time.Time{}, fmt.Errorf("time %q is not YYYYMMDD[HHMM[SS]][Z]", v)
	}
	t, err := time.ParseInLocation(layout, v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q is not YYYYMMDD[HHMM[SS]][Z]", v)
	}
	return t, nil
}

// matchSigner finds an entry for pub valid for the git namespace at when.
// It returns the entry's principals, or "" and the reason the last entry
// for this key refused it ("" reason: no entry lists the key).
func (t *trustSet) matchSigner(pub ssh.PublicKey, when time.Time) (principals, reason string) {
	key := pub.Marshal()
	for _, s := range t.signers {
		if !bytes.Equal(s.key, key) {
			continue
		}
		switch {
		case s.namespaces != nil && !matchPatternList(s.namespaces, gitNamespace):
			reason = fmt.Sprintf("key is allowed only for namespaces %q, not %q", strings.Join(s.namespaces, ","), gitNamespace)
		case !s.validAfter.IsZero() && when.Before(s.validAfter):
			reason = "key not yet valid (valid-after " + s.validAfter.Format(time.RFC3339) + ")"
		case !s.validBefore.IsZero() && when.After(s.validBefore):
			reason = "key expired (valid-before " + s.validBefore.Format(time.RFC3339) + ")"
		default:
			return s.principals, ""
		}
	}
	return "", reason
}

// matchPatternList reports whether name matches the list as OpenSSH's
// match_pattern_list does: "*" and "?" wildcards, and a matching "!pattern"
// refuses whatever else matched.
func matchPatternList(patterns []string, name string) bool {
	ok := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		if m, _ := path.Match(strings.TrimPrefix(p, "!"), name); m {
			if neg {
				return false
			}
			ok = true
		}
	}
	return ok
}
