package forge

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/internal/httpjson"
)

// State is a commit status capstan sets.
type State string

// The states of a plan's commit status.
const (
	Pending State = "pending" // planning
	Success State = "success" // a plan, from a valid config
	Failure State = "failure" // the config is invalid
	Error   State = "error"   // capstan could not plan (git or hosts unreachable)
)

// Client posts to one forge. Errors name the HTTP method, path and
// status (with at most httpjson.MaxErrorBody bytes of the answer), never
// the token.
type Client interface {
	// SetStatus sets the commit status of pr.HeadSHA under the client's
	// status context. description is cut to 140 characters; targetURL may
	// be "".
	SetStatus(ctx context.Context, pr PullRequest, st State, description, targetURL string) error
	// UpsertComment edits the comment of pr holding Marker(key), looking
	// through every page of its comments, or creates one when there is
	// none (or the one found cannot be edited: deleted meanwhile, or not
	// the token's). body should hold the marker (RenderComment's does).
	UpsertComment(ctx context.Context, pr PullRequest, key, body string) error
}

// Default API bases; Gitea has none (give it, e.g.
// https://gitea.example/api/v1).
const (
	DefaultGitHubAPI = "https://api.github.com"
	DefaultGitLabAPI = "https://gitlab.com/api/v4"
)

// MaxDescription is the longest status description sent (GitHub's limit).
const MaxDescription = 140

// maxPages bounds the comment pages UpsertComment reads (100 a page).
const maxPages = 100

// New returns the client of provider p. api is the API base ("" takes the
// provider's default; Gitea requires it); token the access token, sent as
// "Authorization: Bearer" (GitHub), "Authorization: token" (Gitea) or
// "PRIVATE-TOKEN" (GitLab); statusContext names the statuses set (e.g.
// "capstan/myapp"). hc nil uses a client with a 30 s timeout.
func New(p Provider, api, token, statusContext string, hc *http.Client) (Client, error) {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	if token == "" {
		return nil, fmt.Errorf("forge: %s: no API token", p)
	}
	if statusContext == "" {
		return nil, fmt.Errorf("forge: %s: no status context", p)
	}
	h := http.Header{}
	switch p {
	case GitHub:
		api = cmp.Or(api, DefaultGitHubAPI)
		h.Set("Authorization", "Bearer "+token)
		h.Set("Accept", "application/vnd.github+json")
	case Gitea:
		if api == "" {
			return nil, errors.New("forge: gitea: the API base (https://HOST/api/v1) is required")
		}
		h.Set("Authorization", "token "+token)
	case GitLab:
		api = cmp.Or(api, DefaultGitLabAPI)
		h.Set("PRIVATE-TOKEN", token)
	default:
		return nil, fmt.Errorf("forge: unknown provider %q", p)
	}
	u, err := url.Parse(api)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("forge: %s: API base %q is not an http(s) URL", p, api)
	}
	a := &apiClient{provider: p, base: strings.TrimRight(api, "/"), header: h, hc: hc, context: statusContext}
	if p == GitLab {
		return gitlab{a}, nil
	}
	return hub{a}, nil
}

// apiClient sends the requests of one forge's client.
type apiClient struct {
	provider Provider
	base     string
	header   http.Header
	hc       *http.Client
	context  string
}

// do sends body to path (escaped, under the API base) and decodes the
// answer into out (nil: ignored).
func (a *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	b, err := httpjson.Do(ctx, a.hc, method, a.base+path, a.header, body)
	if err == nil && out != nil {
		if jerr := json.Unmarshal(b, out); jerr != nil {
			err = fmt.Errorf("decode answer: %v", jerr)
		}
	}
	if err != nil {
		p, _, _ := strings.Cut(path, "?")
		return fmt.Errorf("forge: %s: %s %s: %w", a.provider, method, p, err)
	}
	return nil
}

// httpCode is the HTTP status of a refused request, or 0.
func httpCode(err error) int {
	var se *httpjson.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// note is a comment as the forges list it.
type note struct {
	ID     int64  `json:"id"`
	Body   string `json:"body"`
	System bool   `json:"system"` // GitLab's notes of events
}

// findMarked pages through list(page) until a comment holds marker,
// returning its id (0: none). It stops at a short page, a page with no
// comment it has not seen (a forge ignoring the page parameter), or
// maxPages.
func findMarked(ctx context.Context, marker string, list func(ctx context.Context, page int) ([]note, error)) (int64, error) {
	seen := map[int64]bool{}
	for page := 1; page <= maxPages; page++ {
		notes, err := list(ctx, page)
		if err != nil {
			return 0, err
		}
		fresh := 0
		for _, n := range notes {
			if seen[n.ID] {
				continue
			}
			seen[n.ID] = true
			fresh++
			if !n.System && strings.Contains(n.Body, marker) {
				return n.ID, nil
			}
		}
		if len(notes) < 100 || fresh == 0 {
			break
		}
	}
	return 0, nil
}

// upsert edits the comment found, or creates one; an edit refused as not
// found or forbidden creates a new comment instead.
func upsert(ctx context.Context, id int64, edit func(context.Context, int64) error, create func(context.Context) error) error {
	if id != 0 {
		err := edit(ctx, id)
		if c := httpCode(err); c != http.StatusNotFound && c != http.StatusForbidden {
			return err
		}
	}
	return create(ctx)
}

// description cuts s to MaxDescription characters on one line.
func description(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > MaxDescription {
		s = string(r[:MaxDescription-1]) + "…"
	}
	return s
}

// hub is the client of GitHub and Gitea, whose APIs share these paths.
type hub struct{ *apiClient }

// repoPath is "/repos/OWNER/NAME" with both escaped.
func repoPath(repo string) (string, error) {
	owner, name, ok := strings.Cut(repo, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("forge: repository %q is not owner/name", repo)
	}
	return "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(name), nil
}

func (h hub) SetStatus(ctx context.Context, pr PullRequest, st State, desc, targetURL string) error {
	rp, err := repoPath(pr.Repo)
	if err != nil {
		return err
	}
	if !isSHA(pr.HeadSHA) {
		return fmt.Errorf("forge: head SHA %q", pr.HeadSHA)
	}
	body := map[string]string{"state": string(st), "context": h.context, "description": description(desc)}
	if targetURL != "" {
		body["target_url"] = targetURL
	}
	return h.do(ctx, http.MethodPost, rp+"/statuses/"+pr.HeadSHA, body, nil)
}

func (h hub) UpsertComment(ctx context.Context, pr PullRequest, key, body string) error {
	rp, err := repoPath(pr.Repo)
	if err != nil {
		return err
	}
	issue := rp + "/issues/" + strconv.Itoa(pr.Number) + "/comments"
	id, err := findMarked(ctx, Marker(key), func(ctx context.Context, page int) ([]note, error) {
		var notes []note
		// GitHub pages with per_page, Gitea with limit.
		err := h.do(ctx, http.MethodGet, fmt.Sprintf("%s?per_page=100&limit=100&page=%d", issue, page), nil, &notes)
		return notes, err
	})
	if err != nil {
		return err
	}
	msg := map[string]string{"body": body}
	return upsert(ctx, id, func(ctx context.Context, id int64) error {
		return h.do(ctx, http.MethodPatch, rp+"/issues/comments/"+strconv.FormatInt(id, 10), msg, nil)
	}, func(ctx context.Context) error {
		return h.do(ctx, http.MethodPost, issue, msg, nil)
	})
}

// gitlab is the client of GitLab.
type gitlab struct{ *apiClient }

// projectPath is "/projects/ID", or the escaped project path without an id.
func projectPath(pr PullRequest) (string, error) {
	if pr.ProjectID > 0 {
		return "/projects/" + strconv.FormatInt(pr.ProjectID, 10), nil
	}
	if pr.Repo == "" {
		return "", errors.New("forge: gitlab: no project id or path")
	}
	return "/projects/" + url.PathEscape(pr.Repo), nil
}

// gitlabState maps a State to GitLab's: failure and error are both
// "failed".
var gitlabState = map[State]string{Pending: "pending", Success: "success", Failure: "failed", Error: "failed"}

func (g gitlab) SetStatus(ctx context.Context, pr PullRequest, st State, desc, targetURL string) error {
	pp, err := projectPath(pr)
	if err != nil {
		return err
	}
	if !isSHA(pr.HeadSHA) {
		return fmt.Errorf("forge: head SHA %q", pr.HeadSHA)
	}
	state, ok := gitlabState[st]
	if !ok {
		return fmt.Errorf("forge: unknown state %q", st)
	}
	body := map[string]string{"state": state, "name": g.context, "description": description(desc)}
	if targetURL != "" {
		body["target_url"] = targetURL
	}
	err = g.do(ctx, http.MethodPost, pp+"/statuses/"+pr.HeadSHA, body, nil)
	var se *httpjson.StatusError
	if errors.As(err, &se) && se.Code == http.StatusBadRequest && strings.Contains(se.Body, "Cannot transition status") {
		return nil // GitLab refuses to set the state the status already has
	}
	return err
}

func (g gitlab) UpsertComment(ctx context.Context, pr PullRequest, key, body string) error {
	pp, err := projectPath(pr)
	if err != nil {
		return err
	}
	notes := pp + "/merge_requests/" + strconv.Itoa(pr.Number) + "/notes"
	id, err := findMarked(ctx, Marker(key), func(ctx context.Context, page int) ([]note, error) {
		var ns []note
		err := g.do(ctx, http.MethodGet, fmt.Sprintf("%s?per_page=100&page=%d", notes, page), nil, &ns)
		return ns, err
	})
	if err != nil {
		return err
	}
	msg := map[string]string{"body": body}
	return upsert(ctx, id, func(ctx context.Context, id int64) error {
		return g.do(ctx, http.MethodPut, notes+"/"+strconv.FormatInt(id, 10), msg, nil)
	}, func(ctx context.Context) error {
		return g.do(ctx, http.MethodPost, notes, msg, nil)
	})
}
