package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/capstan-dev/capstan/reconcile/window"
)

// Defaults of capstan.yml.
const (
	DefaultListen   = "127.0.0.1:9740"
	DefaultStateDir = "/var/lib/capstan"
)

// Config is capstan.yml, the daemon's configuration, as LoadConfig returns
// it: defaults applied and validated.
type Config struct {
	Listen         string      `yaml:"listen"`
	StateDir       string      `yaml:"state_dir"`
	SSH            SSHSettings `yaml:"ssh"`
	SecretsEnvFile string      `yaml:"secrets_env_file"`
	Webhooks       struct {
		GitHubSecretEnv string `yaml:"github_secret_env"`
		GitLabTokenEnv  string `yaml:"gitlab_token_env"`
		GiteaSecretEnv  string `yaml:"gitea_secret_env"`
		// RegistryTokenEnv names the token a registry's notifications
		// carry ("Authorization: Bearer TOKEN") to /webhooks/registry.
		RegistryTokenEnv string `yaml:"registry_token_env"`
	} `yaml:"webhooks"`
	// APITokenEnv names the environment variable holding the API token;
	// when set, the status page, the API and /metrics require it.
	APITokenEnv string `yaml:"api_token_env"`
	// APITokens are named tokens with scopes (read, sync, override); the
	// name of the one that asked is recorded with each pass.
	APITokens []APIToken `yaml:"api_tokens"`
	// InsecurePublicStatus allows listening on a non-loopback address
	// without a token (the status page, API and metrics open to anyone
	// who can reach the port).
	InsecurePublicStatus bool          `yaml:"insecure_public_status"`
	InsecureRegistries   []string      `yaml:"insecure_registries"`
	ImageWait            Duration      `yaml:"image_wait"`
	KeepPasses           int           `yaml:"keep_passes"`
	Alerts               []AlertConfig `yaml:"alerts"`
	Apps                 []AppConfig   `yaml:"apps"`
	// State is where the records live: SQLite in state_dir (one
	// replica), or PostgreSQL, which several replicas share.
	State StateConfig `yaml:"state"`
}

// StateConfig chooses the store.
type StateConfig struct {
	// Driver is sqlite (the default) or postgres.
	Driver string `yaml:"driver"`
	// DSNEnv names the variable holding the PostgreSQL DSN (it carries a
	// password, so never the file itself).
	DSNEnv string `yaml:"dsn_env"`
	// LeaseTTL is how long an app stays with a replica that stopped
	// renewing its lease (died, paused, cut off from the database) before
	// another takes it over; default 10s.
	LeaseTTL Duration `yaml:"lease_ttl"`
}

// replicated reports whether replicas share the store (PostgreSQL).
func (s StateConfig) replicated() bool { return s.Driver == "postgres" }

// SSHSettings are the daemon's SSH defaults for the hosts (and for git over
// SSH); empty means the OpenSSH defaults.
type SSHSettings struct {
	KnownHosts string `yaml:"known_hosts"`
	Identity   string `yaml:"identity"`
	AcceptNew  bool   `yaml:"accept_new"`
	// ConnectTimeout bounds a connection (TCP, handshake, auth); default
	// 10 s. CommandTimeout bounds each remote command; default none (a
	// dead connection is still caught by keepalives within ~20 s).
	// ObserveTimeout bounds the observation of one host in a pass;
	// default 5 s.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	CommandTimeout Duration `yaml:"command_timeout"`
	ObserveTimeout Duration `yaml:"observe_timeout"`
}

// AlertConfig is one alert sink.
type AlertConfig struct {
	Type     string   `yaml:"type"` // webhook, slack, github
	URL      string   `yaml:"url"`
	URLEnv   string   `yaml:"url_env"`
	TokenEnv string   `yaml:"token_env"`
	API      string   `yaml:"api"`
	Remind   Duration `yaml:"remind"` // repeat open drift every …; 0 = never
}

// AppConfig is one app the daemon follows: a repository branch holding a
// Kamal config in Path.
type AppConfig struct {
	Name          string   `yaml:"name"`
	Repo          string   `yaml:"repo"`
	Branch        string   `yaml:"branch"`
	Path          string   `yaml:"path"`
	Destination   string   `yaml:"destination"`
	Poll          Duration `yaml:"poll"`
	DriftSchedule string   `yaml:"drift_schedule"`
	SelfHeal      *bool    `yaml:"self_heal"`
	// LockTimeout is how long a pass waits for Kamal's deploy lock held by
	// someone else before it fails (retried next poll); default 5m.
	LockTimeout Duration `yaml:"lock_timeout"`
	Git         struct {
		SSHKey     string `yaml:"ssh_key"`
		TokenEnv   string `yaml:"token_env"`
		KnownHosts string `yaml:"known_hosts"`
	} `yaml:"git"`
	// Windows are deploy windows (Argo CD's sync windows: a deny window
	// wins; with any allow window, deploys happen only inside one). A
	// pass that would change a host waits while they are closed; so does
	// self-heal unless HealInWindows.
	Windows       []window.Spec `yaml:"windows"`
	HealInWindows bool          `yaml:"heal_in_windows"`
	// Verify, when set, deploys only commits signed by a trusted key.
	Verify *VerifyConfig `yaml:"verify"`
	// PullRequests, when set, posts the plan of each pull request against
	// Branch as a commit status and a comment.
	PullRequests *PRConfig `yaml:"pull_requests"`

	schedule cron.Schedule
	windows  *window.Set
}

// Duration reads "60s", "5m" or a number of seconds.
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("should be a duration like 60s or 5m")
	}
	if s, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
		if s < 0 || s > int64(math.MaxInt64/time.Second) { // negative, or past time.Duration
			return fmt.Errorf("%q is not a duration like 60s or 5m", n.Value)
		}
		*d = Duration(time.Duration(s) * time.Second)
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration like 60s or 5m", n.Value)
	}
	*d = Duration(v)
	return nil
}

var appNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// ConfigErrors are the problems in capstan.yml, one per element, each as
// FILE:LINE: key: message.
type ConfigErrors []string

func (e ConfigErrors) Error() string { return strings.Join(e, "\n") }

// LoadConfig reads capstan.yml, applies CAPSTAN_LISTEN and
// CAPSTAN_STATE_DIR from the environment and the defaults, and validates
// it. Every problem comes back at once, as ConfigErrors; an unreadable file
// is another error.
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) > 1<<20 {
		return nil, fmt.Errorf("%s: larger than 1 MiB", path)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			var errs ConfigErrors
			for _, m := range te.Errors {
				errs = append(errs, path+":"+strings.TrimPrefix(m, "line "))
			}
			return nil, errs
		}
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if v := getenv("CAPSTAN_LISTEN"); v != "" {
		c.Listen = v
	}
	if v := getenv("CAPSTAN_STATE_DIR"); v != "" {
		c.StateDir = v
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.ImageWait == 0 {
		c.ImageWait = Duration(10 * time.Minute)
	}
	if c.KeepPasses == 0 {
		c.KeepPasses = 1000
	}
	var errs ConfigErrors
	bad := func(keyPath string, format string, args ...any) {
		errs = append(errs, fmt.Sprintf("%s:%d: %s: %s", path, lineOf(&root, keyPath), keyPath, fmt.Sprintf(format, args...)))
	}
	if len(c.Apps) == 0 {
		bad("apps", "at least one app is required")
	}
	seen := map[string]bool{}
	for i := range c.Apps {
		a := &c.Apps[i]
		p := fmt.Sprintf("apps[%d]", i)
		switch {
		case a.Name == "":
			bad(p+".name", "is required")
		case !appNameRE.MatchString(a.Name):
			bad(p+".name", "%q must be lower-case letters, digits, '.', '_' or '-'", a.Name)
		case seen[a.Name]:
			bad(p+".name", "%q is used twice", a.Name)
		}
		seen[a.Name] = true
		if a.Repo == "" {
			bad(p+".repo", "is required")
		}
		if a.Branch == "" {
			a.Branch = "main"
		}
		if a.Path == "" {
			a.Path = "."
		}
		if strings.Contains(a.Path, "..") {
			bad(p+".path", "must stay inside the repository")
		}
		if a.Poll == 0 {
			a.Poll = Duration(60 * time.Second)
		} else if time.Duration(a.Poll) < time.Second {
			bad(p+".poll", "must be at least 1s")
		}
		if a.DriftSchedule == "" {
			a.DriftSchedule = "*/5 * * * *"
		}
		sched, err := cron.ParseStandard(a.DriftSchedule)
		if err != nil {
			bad(p+".drift_schedule", "%v", err)
		}
		a.schedule = sched
		if a.Git.TokenEnv != "" && getenv(a.Git.TokenEnv) == "" {
			bad(p+".git.token_env", "environment variable %s is not set", a.Git.TokenEnv)
		}
		checkWindows(a, p, bad)
		checkVerify(a, p, bad)
		checkPR(a, p, getenv, bad)
	}
	for i, al := range c.Alerts {
		p := fmt.Sprintf("alerts[%d]", i)
		switch al.Type {
		case "webhook", "slack":
			if al.URL == "" && al.URLEnv == "" {
				bad(p+".url", "url or url_env is required")
			}
			if al.URLEnv != "" && getenv(al.URLEnv) == "" {
				bad(p+".url_env", "environment variable %s is not set", al.URLEnv)
			}
		case "github":
			if al.TokenEnv == "" || getenv(al.TokenEnv) == "" {
				bad(p+".token_env", "a GitHub token is required (token_env naming a set variable)")
			}
		default:
			bad(p+".type", "%q: want webhook, slack or github", al.Type)
		}
	}
	for _, k := range []struct{ path, env string }{
		{"webhooks.github_secret_env", c.Webhooks.GitHubSecretEnv}, {"webhooks.gitlab_token_env", c.Webhooks.GitLabTokenEnv},
		{"webhooks.gitea_secret_env", c.Webhooks.GiteaSecretEnv}, {"webhooks.registry_token_env", c.Webhooks.RegistryTokenEnv},
		{"api_token_env", c.APITokenEnv},
	} {
		if k.env != "" && getenv(k.env) == "" {
			bad(k.path, "environment variable %s is not set", k.env)
		}
	}
	checkTokens(c, getenv, bad)
	checkState(&c.State, getenv, bad)
	if err := checkExposure(c.Listen, c.APITokenEnv != "" || len(c.APITokens) > 0, c.InsecurePublicStatus); err != nil {
		bad("listen", "%v", err)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// checkState validates the state block and applies its defaults.
func checkState(st *StateConfig, getenv func(string) string, bad func(string, string, ...any)) {
	switch st.Driver {
	case "":
		st.Driver = "sqlite"
	case "sqlite":
	case "postgres":
		if st.DSNEnv == "" {
			bad("state.dsn_env", "is required with driver postgres (the variable holding the DSN)")
		} else if getenv(st.DSNEnv) == "" {
			bad("state.dsn_env", "environment variable %s is not set", st.DSNEnv)
		}
	default:
		bad("state.driver", "%q: want sqlite or postgres", st.Driver)
	}
	if st.LeaseTTL == 0 {
		st.LeaseTTL = Duration(10 * time.Second)
	} else if time.Duration(st.LeaseTTL) < 3*time.Second {
		bad("state.lease_ttl", "must be at least 3s")
	}
}

// checkExposure refuses a listen address other machines can reach when no
// token guards the status page, the API and the metrics, unless insecure
// says the operator wants them public.
func checkExposure(listen string, token, insecure bool) error {
	if token || insecure || loopback(listen) {
		return nil
	}
	return fmt.Errorf("%s is reachable from other machines and no api_token_env is set: set api_token_env "+
		"(the status page, API and /metrics then require the token), listen on 127.0.0.1, or set insecure_public_status: true", listen)
}

// loopback reports whether listen (host:port) binds only the loopback
// interface: "localhost" or a loopback IP. An empty host (all interfaces),
// any other name or an unparsable address is not loopback.
func loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// lineOf finds the line of a key path like "apps[1].git.token_env" in a
// YAML document; it falls back to the nearest existing parent.
func lineOf(root *yaml.Node, keyPath string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, part := range strings.Split(keyPath, ".") {
		key, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 {
			key = part[:i]
			idx, _ = strconv.Atoi(strings.TrimSuffix(part[i+1:], "]"))
		}
		found := false
		if n.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == key {
					line = n.Content[j].Line
					n = n.Content[j+1]
					found = true
					break
				}
			}
		}
		if !found {
			return line
		}
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		}
	}
	return line
}
