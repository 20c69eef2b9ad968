// Package forge talks to the code forges capstan posts plans to: it reads
// their pull request (GitLab: merge request) webhooks, and sets commit
// statuses and one edited-in-place comment on a pull request through
// their APIs (GitHub, Gitea/Forgejo, GitLab). Signatures of the webhooks
// are checked with package webhook before a body reaches ParsePullRequest.
//
// Like a push webhook, a pull request event is a hint: the caller fetches
// HeadRef from the base repository and plans what git gives it.
package forge

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/capstan-dev/capstan/internal/webhook"
)

// Provider names a forge.
type Provider string

// The forges capstan knows.
const (
	GitHub Provider = "github"
	Gitea  Provider = "gitea" // and Forgejo, which speaks the same API
	GitLab Provider = "gitlab"
)

// ErrPayload: the body is not a pull request event this package reads.
var ErrPayload = errors.New("unreadable pull request payload")

// PullRequest is what capstan reads from a pull request event.
type PullRequest struct {
	Provider Provider
	// Repo is the base repository: "owner/name" (GitHub, Gitea), or the
	// GitLab project path "group/sub/name".
	Repo string
	// ProjectID is the GitLab project id of the base (target) project; 0
	// elsewhere.
	ProjectID int64
	// Number is the pull request number (GitLab: the merge request iid).
	Number  int
	HeadSHA string
	// HeadRef is the ref to fetch from the base repository:
	// "refs/pull/N/head" (GitHub, Gitea) or "refs/merge-requests/N/head"
	// (GitLab). It holds the head even when it comes from a fork.
	HeadRef string
	// BaseRef is the target branch, e.g. "main".
	BaseRef string
	// URLs are the base repository's URLs from the payload, for Matches.
	URLs []string
	// Sender is the login of who triggered the event.
	Sender string
	// Action is the forge's action ("opened", "synchronize", "update", …).
	Action string
}

// Key names the pull request for rate limits and comment markers:
// "provider:repo#number".
func (pr PullRequest) Key() string {
	return fmt.Sprintf("%s:%s#%d", pr.Provider, pr.Repo, pr.Number)
}

// Matches reports whether repoURL is the pull request's base repository
// (URLs compared as webhook.NormalizeURL does).
func (pr PullRequest) Matches(repoURL string) bool {
	return webhook.Push{URLs: pr.URLs}.Matches(repoURL)
}

// EventName returns the event a webhook request announces in the
// provider's header: X-GitHub-Event, X-Gitea-Event or X-Forgejo-Event,
// X-Gitlab-Event.
func EventName(p Provider, h http.Header) string {
	switch p {
	case GitHub:
		return h.Get("X-GitHub-Event")
	case Gitea:
		if ev := h.Get("X-Gitea-Event"); ev != "" {
			return ev
		}
		return h.Get("X-Forgejo-Event")
	case GitLab:
		return h.Get("X-Gitlab-Event")
	}
	return ""
}

// maxNumber bounds a pull request number, so that one from a payload
// always fits an int and a ref name.
const maxNumber = 1 << 31

// ParsePullRequest reads a pull request event: GitHub's and Gitea's or
// Forgejo's "pull_request" (Gitea's "pull_request_sync" too), GitLab's
// "Merge Request Hook". ok is false, with no error, for another event or
// an action that needs no plan: a plan is due on opened, synchronize
// (Gitea: synchronized) and reopened; GitLab: open, reopen, and update
// when it carries oldrev (new commits, not only a new title). Errors wrap
// ErrPayload.
func ParsePullRequest(provider Provider, event string, body []byte) (pr PullRequest, ok bool, err error) {
	switch provider {
	case GitHub, Gitea:
		if event != "pull_request" && !(provider == Gitea && event == "pull_request_sync") {
			return PullRequest{}, false, nil
		}
		pr, ok, err = parseHubPR(body)
	case GitLab:
		if event != "Merge Request Hook" {
			return PullRequest{}, false, nil
		}
		pr, ok, err = parseGitLabMR(body)
	default:
		return PullRequest{}, false, fmt.Errorf("%w: unknown provider %q", ErrPayload, provider)
	}
	if err != nil || !ok {
		return PullRequest{}, false, err
	}
	pr.Provider = provider
	if err := pr.check(); err != nil {
		return PullRequest{}, false, err
	}
	return pr, true, nil
}

// check refuses a parsed event missing what a plan needs.
func (pr PullRequest) check() error {
	switch {
	case pr.Number <= 0 || pr.Number >= maxNumber:
		return fmt.Errorf("%w: pull request number %d", ErrPayload, pr.Number)
	case !isSHA(pr.HeadSHA):
		return fmt.Errorf("%w: head SHA %q", ErrPayload, pr.HeadSHA)
	case pr.Repo == "" || len(pr.URLs) == 0:
		return fmt.Errorf("%w: no base repository", ErrPayload)
	case pr.BaseRef == "":
		return fmt.Errorf("%w: no target branch", ErrPayload)
	}
	return nil
}

// isSHA reports whether s is a full hex SHA-1 or SHA-256.
func isSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

type repoJSON struct {
	FullName string `json:"full_name"`
	CloneURL string `json:"clone_url"`
	SSHURL   string `json:"ssh_url"`
	GitURL   string `json:"git_url"`
	HTMLURL  string `json:"html_url"`
}

func (r repoJSON) urls() []string {
	return nonEmpty(r.CloneURL, r.SSHURL, r.GitURL, r.HTMLURL)
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// parseHubPR reads the pull_request payload GitHub and Gitea share.
func parseHubPR(body []byte) (PullRequest, bool, error) {
	var raw struct {
		Action      string `json:"action"`
		Number      int64  `json:"number"`
		PullRequest *struct {
			Number int64 `json:"number"`
			Head   struct {
				SHA string `json:"sha"`
			} `json:"head"`
			Base struct {
				Ref  string    `json:"ref"`
				Repo *repoJSON `json:"repo"`
			} `json:"base"`
		} `json:"pull_request"`
		Repository *repoJSON `json:"repository"`
		Sender     struct {
			Login string `json:"login"`
		} `json:"sender"`
	}
	if err := json.Unmarshal(body, &raw); err != nil || raw.PullRequest == nil {
		return PullRequest{}, false, fmt.Errorf("%w: not a pull_request event", ErrPayload)
	}
	switch raw.Action {
	case "opened", "synchronize", "synchronized", "reopened":
	default:
		return PullRequest{}, false, nil
	}
	base := raw.Repository
	if base == nil || base.FullName == "" {
		base = raw.PullRequest.Base.Repo
	}
	if base == nil {
		return PullRequest{}, false, fmt.Errorf("%w: no repository", ErrPayload)
	}
	n := raw.PullRequest.Number
	if n == 0 {
		n = raw.Number
	}
	if n <= 0 || n >= maxNumber {
		return PullRequest{}, false, fmt.Errorf("%w: pull request number %d", ErrPayload, n)
	}
	return PullRequest{Repo: base.FullName, Number: int(n), HeadSHA: strings.ToLower(raw.PullRequest.Head.SHA),
		HeadRef: fmt.Sprintf("refs/pull/%d/head", n), BaseRef: raw.PullRequest.Base.Ref, URLs: base.urls(),
		Sender: raw.Sender.Login, Action: raw.Action}, true, nil
}

// parseGitLabMR reads a Merge Request Hook payload.
func parseGitLabMR(body []byte) (PullRequest, bool, error) {
	var raw struct {
		ObjectKind string `json:"object_kind"`
		User       struct {
			Username string `json:"username"`
		} `json:"user"`
		Project struct {
			ID                int64  `json:"id"`
			PathWithNamespace string `json:"path_with_namespace"`
			GitHTTPURL        string `json:"git_http_url"`
			GitSSHURL         string `json:"git_ssh_url"`
			WebURL            string `json:"web_url"`
		} `json:"project"`
		Attrs *struct {
			IID          int64  `json:"iid"`
			Action       string `json:"action"`
			OldRev       string `json:"oldrev"`
			TargetBranch string `json:"target_branch"`
			LastCommit   struct {
				ID string `json:"id"`
			} `json:"last_commit"`
		} `json:"object_attributes"`
	}
	if err := json.Unmarshal(body, &raw); err != nil || raw.ObjectKind != "merge_request" || raw.Attrs == nil {
		return PullRequest{}, false, fmt.Errorf("%w: not a merge request event", ErrPayload)
	}
	a := raw.Attrs
	switch {
	case a.Action == "open", a.Action == "reopen":
	case a.Action == "update" && a.OldRev != "":
	default:
		return PullRequest{}, false, nil
	}
	if a.IID <= 0 || a.IID >= maxNumber {
		return PullRequest{}, false, fmt.Errorf("%w: merge request iid %d", ErrPayload, a.IID)
	}
	p := raw.Project
	return PullRequest{Repo: p.PathWithNamespace, ProjectID: p.ID, Number: int(a.IID),
		HeadSHA: strings.ToLower(a.LastCommit.ID), HeadRef: fmt.Sprintf("refs/merge-requests/%d/head", a.IID),
		BaseRef: a.TargetBranch, URLs: nonEmpty(p.GitHTTPURL, p.GitSSHURL, p.WebURL),
		Sender: raw.User.Username, Action: a.Action}, true, nil
}
