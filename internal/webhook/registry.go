package webhook

import (
	"encoding/json"
	"regexp"
)

// ImagePush is a tag pushed to a registry, as a notification tells it.
type ImagePush struct {
	// Repository is the image's path in the registry, e.g. "acme/app".
	Repository string
	Tag        string
	Digest     string
	// Host is the registry host the push was made to, when the
	// notification says.
	Host string
}

// tagRE is a Docker tag; repoRE an image repository path.
var (
	tagRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	repoRE = regexp.MustCompile(`^[a-z0-9]+(?:[._-]{1,2}[a-z0-9]+|-+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]{1,2}[a-z0-9]+|-+[a-z0-9]+)*){0,15}$`)
)

// ParseRegistry reads a CNCF Distribution (Docker registry) notification
// envelope and returns its pushes of tagged manifests; other events (pulls,
// deletes, blob pushes, pushes by digest) are left out, and so is a
// repository or tag that is not well-formed.
func ParseRegistry(body []byte) ([]ImagePush, error) {
	var env struct {
		Events []struct {
			Action string `json:"action"`
			Target struct {
				MediaType  string `json:"mediaType"`
				Repository string `json:"repository"`
				Tag        string `json:"tag"`
				Digest     string `json:"digest"`
			} `json:"target"`
			Request struct {
				Host string `json:"host"`
			} `json:"request"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Events == nil {
		return nil, ErrPayload
	}
	var out []ImagePush
	for _, e := range env.Events {
		t := e.Target
		if e.Action != "push" || t.Tag == "" || !tagRE.MatchString(t.Tag) || !repoRE.MatchString(t.Repository) {
			continue
		}
		out = append(out, ImagePush{Repository: t.Repository, Tag: t.Tag, Digest: t.Digest, Host: e.Request.Host})
	}
	return out, nil
}
