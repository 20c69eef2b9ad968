package daemon

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// API token scopes: read sees the page, the API, the logs and the metrics;
// sync asks for passes; override deploys through a closed deploy window.
const (
	ScopeRead     = "read"
	ScopeSync     = "sync"
	ScopeOverride = "override"
)

var allScopes = []string{ScopeRead, ScopeSync, ScopeOverride}

// APIToken is a named token of capstan.yml's api_tokens: its secret is in
// the environment variable TokenEnv; Scopes say what it may do. The name
// is recorded with every pass it triggers ("token:NAME").
type APIToken struct {
	Name     string   `yaml:"name"`
	TokenEnv string   `yaml:"token_env"`
	Scopes   []string `yaml:"scopes"`
}

var tokenNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// checkTokens validates api_tokens (bad reports one problem at a key path).
// The legacy api_token_env is the token "api" with every scope.
func checkTokens(c *Config, getenv func(string) string, bad func(keyPath, format string, args ...any)) {
	seen := map[string]bool{}
	for i, t := range c.APITokens {
		p := fmt.Sprintf("api_tokens[%d]", i)
		switch {
		case !tokenNameRE.MatchString(t.Name):
			bad(p+".name", "%q must be lower-case letters, digits, '.', '_' or '-'", t.Name)
		case seen[t.Name] || (t.Name == "api" && c.APITokenEnv != ""):
			bad(p+".name", "%q is used twice (api_token_env is the token named api)", t.Name)
		}
		seen[t.Name] = true
		switch {
		case t.TokenEnv == "":
			bad(p+".token_env", "is required")
		case getenv(t.TokenEnv) == "":
			bad(p+".token_env", "environment variable %s is not set", t.TokenEnv)
		}
		if len(t.Scopes) == 0 {
			bad(p+".scopes", "at least one of %s is required", strings.Join(allScopes, ", "))
		}
		for _, s := range t.Scopes {
			if !slices.Contains(allScopes, s) {
				bad(p+".scopes", "%q: want %s", s, strings.Join(allScopes, ", "))
			}
		}
	}
}

// namedToken is a token the daemon accepts, with its secret.
type namedToken struct {
	name   string
	secret string
	scopes []string
}

func (t *namedToken) may(scope string) bool { return t != nil && slices.Contains(t.scopes, scope) }

// anonymous is who calls when no token is configured: the routes are open
// (on loopback, or by insecure_public_status).
var anonymous = &namedToken{name: "anonymous", scopes: allScopes}

// loadTokens reads every configured token's secret; an empty one is
// ErrNoToken (a missing token must not leave the API open), and two tokens
// with the same secret could not be told apart.
func loadTokens(cfg *Config, getenv func(string) string) ([]*namedToken, error) {
	var out []*namedToken
	if cfg.APITokenEnv != "" {
		out = append(out, &namedToken{name: "api", secret: getenv(cfg.APITokenEnv), scopes: allScopes})
		if out[0].secret == "" {
			return nil, fmt.Errorf("%w: %s", ErrNoToken, cfg.APITokenEnv)
		}
	}
	for _, t := range cfg.APITokens {
		nt := &namedToken{name: t.Name, secret: getenv(t.TokenEnv), scopes: t.Scopes}
		if nt.secret == "" {
			return nil, fmt.Errorf("%w: %s", ErrNoToken, t.TokenEnv)
		}
		for _, o := range out {
			if sameSecret(o.secret, nt.secret) {
				return nil, fmt.Errorf("api_tokens %s and %s have the same secret", o.name, nt.name)
			}
		}
		out = append(out, nt)
	}
	return out, nil
}

// identify returns the token r carries: as "Authorization: Bearer TOKEN"
// or, when basic is true, as the password of HTTP basic auth (any user
// name, so a browser can log in); nil when it carries none that is
// configured. With no token configured every request is anonymous.
func (d *Daemon) identify(r *http.Request, basic bool) *namedToken {
	if len(d.tokens) == 0 {
		return anonymous
	}
	var cred string
	if scheme, c, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		cred = c
	} else if _, pw, ok := r.BasicAuth(); ok && basic {
		cred = pw
	} else {
		return nil
	}
	var found *namedToken
	for _, t := range d.tokens { // every one compared: the time does not tell which matched
		if sameSecret(cred, t.secret) {
			found = t
		}
	}
	return found
}

type callerKey struct{}

// caller is the token that authorized r (private put it there).
func caller(r *http.Request) *namedToken {
	t, _ := r.Context().Value(callerKey{}).(*namedToken)
	return t
}

// private serves h only to requests whose token has scope; others get 401
// (no known token, with a challenge for the scheme the route takes: Basic
// for the status page when basic is true, Bearer for the API and the
// metrics) or 403 (a token without the scope).
func (d *Daemon) private(h http.Handler, basic bool, scope string) http.Handler {
	challenge := `Bearer realm="capstan"`
	if basic {
		challenge = `Basic realm="capstan"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := d.identify(r, basic)
		if t == nil {
			w.Header().Set("WWW-Authenticate", challenge)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if !t.may(scope) {
			http.Error(w, fmt.Sprintf("token %s lacks the %s scope", t.name, scope), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, t)))
	})
}
