// Package httpjson sends one JSON request to an HTTP API and reads the
// answer: the one helper behind capstan's API clients (notifiers, forge
// comments and statuses). It never logs, and its errors never show the
// URL or the headers: a token in a header and a secret webhook URL stay
// out of them. Callers whose paths are not secret add method and path.
package httpjson

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Limits on what is read back.
const (
	// MaxResponse bounds the body read from any answer.
	MaxResponse = 1 << 20
	// MaxErrorBody bounds the part of an error answer kept in StatusError.
	MaxErrorBody = 200
)

// ErrRequest: the request could not be built (a body that does not
// encode, a malformed URL); sending it again cannot help.
var ErrRequest = errors.New("unusable request")

// StatusError is an answer outside 2xx.
type StatusError struct {
	Code int
	Body string // the answer's first MaxErrorBody bytes, trimmed
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("HTTP %d", e.Code)
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

// Retryable reports whether the same request may succeed later: a 5xx
// or 429 answer. Other 4xx answers are refusals a retry cannot fix.
func (e *StatusError) Retryable() bool {
	return e.Code >= 500 || e.Code == http.StatusTooManyRequests
}

// Do sends body (nil: no body) JSON-encoded with method to rawURL, with
// header added to Content-Type, Accept and User-Agent, and returns the
// answer's body (at most MaxResponse bytes). A non-2xx answer returns the
// body and a *StatusError; a request that cannot be built ErrRequest; a transport failure returns hc's error
// without the URL, or ctx's error. hc nil means http.DefaultClient; give a
// client with a timeout, or a ctx with a deadline.
func Do(ctx context.Context, hc *http.Client, method, rawURL string, header http.Header, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%w: encode body: %v", ErrRequest, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
	if err != nil {
		return nil, fmt.Errorf("%w: bad URL", ErrRequest)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "capstan")
	for k, vs := range header {
		req.Header[http.CanonicalHeaderKey(k)] = vs
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, unwrapURL(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, MaxResponse))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg := out
		if len(msg) > MaxErrorBody {
			msg = msg[:MaxErrorBody]
		}
		return out, &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(strings.ToValidUTF8(string(msg), ""))}
	}
	return out, nil
}

// unwrapURL drops the *url.Error wrapper, whose message holds the whole
// URL (a Slack webhook URL is a secret).
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}
