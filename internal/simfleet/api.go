package simfleet

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// serveAPI answers Docker Engine API requests (HTTP/1.1, keep-alive) on
// one direct-streamlocal channel until the client closes it.
func (h *Host) serveAPI(ch io.ReadWriter) {
	br := bufio.NewReader(ch)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		in, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(in))
		h.wait(h.latency().RTT)
		if id, ok := execStart(req); ok {
			// dockerd takes the connection over, writes the command's
			// multiplexed output raw and closes it.
			h.apiExecStart(ch, id)
			return
		}
		status, body := h.api(req)
		resp := &http.Response{StatusCode: status, ProtoMajor: 1, ProtoMinor: 1, Request: req,
			Header: http.Header{"Content-Type": {"application/json"}, "Api-Version": {"1.47"}},
			Body:   io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
		if err := resp.Write(ch); err != nil {
			return
		}
	}
}

var apiVersion = regexp.MustCompile(`^/v[0-9.]+/`)

// api answers one request with a status and a JSON body.
func (h *Host) api(req *http.Request) (int, []byte) {
	p := apiVersion.ReplaceAllString(req.URL.Path, "/")
	q := req.URL.Query()
	m := req.Method
	switch {
	case m == http.MethodGet && p == "/containers/json":
		h.f.stats.count("api GET /containers/json")
		h.mu.Lock()
		list := make([]any, 0, len(h.state.containers))
		for i := len(h.state.containers) - 1; i >= 0; i-- {
			list = append(list, h.state.containers[i].apiSummary())
		}
		h.mu.Unlock()
		return jsonAnswer(http.StatusOK, list)
	case m == http.MethodPost && p == "/images/create":
		h.f.stats.count("api POST /images/create")
		return h.apiPull(q.Get("fromImage"), q.Get("tag"))
	case strings.HasPrefix(p, "/images/"):
		return h.apiImage(m, strings.TrimPrefix(p, "/images/"), q.Get("repo"), q.Get("tag"))
	case m == http.MethodPost && strings.HasPrefix(p, "/containers/") && strings.HasSuffix(p, "/exec"):
		return h.apiExecCreate(strings.TrimSuffix(strings.TrimPrefix(p, "/containers/"), "/exec"), req.Body)
	case m == http.MethodGet && strings.HasPrefix(p, "/exec/") && strings.HasSuffix(p, "/json"):
		return h.apiExecInspect(strings.TrimSuffix(strings.TrimPrefix(p, "/exec/"), "/json"))
	case strings.HasPrefix(p, "/containers/"):
		return h.apiContainer(m, strings.TrimPrefix(p, "/containers/"), q)
	}
	h.f.stats.unknownCmd(h.addr + ": api " + m + " " + req.URL.String())
	return apiMessage(http.StatusNotFound, "page not found")
}

func (h *Host) apiImage(m, rest, repo, tag string) (int, []byte) {
	switch {
	case m == http.MethodGet && strings.HasSuffix(rest, "/json"):
		h.f.stats.count("api GET /images/{name}/json")
		name := strings.TrimSuffix(rest, "/json")
		h.mu.Lock()
		defer h.mu.Unlock()
		if im := h.state.image(name); im != nil {
			return jsonAnswer(http.StatusOK, im.inspect())
		}
		return apiMessage(http.StatusNotFound, "No such image: "+name)
	case m == http.MethodPost && strings.HasSuffix(rest, "/tag"):
		h.f.stats.count("api POST /images/{name}/tag")
		dst := repo + ":" + tag
		if tag == "" {
			dst = repo + ":latest"
		}
		x := &cmdCtx{h: h, errw: io.Discard, out: io.Discard}
		if x.tag(strings.TrimSuffix(rest, "/tag"), dst) != 0 {
			return apiMessage(http.StatusNotFound, "No such image: "+strings.TrimSuffix(rest, "/tag"))
		}
		return http.StatusCreated, nil
	}
	h.f.stats.unknownCmd(h.addr + ": api " + m + " /images/" + rest)
	return apiMessage(http.StatusNotFound, "page not found")
}

// apiPull pulls repo:tag and streams progress messages, as dockerd does.
func (h *Host) apiPull(repo, tag string) (int, []byte) {
	ref := repo
	if tag != "" {
		sep := ":"
		if strings.HasPrefix(tag, "sha256:") {
			sep = "@"
		}
		ref += sep + tag
	}
	h.wait(h.latency().PullPerMB * time.Duration(h.f.opts.ImageMB))
	h.mu.Lock()
	h.f.pulled(&h.state, ref)
	h.mu.Unlock()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.Encode(map[string]string{"status": "Pulling from " + repo, "id": tag})
	enc.Encode(map[string]string{"status": "Status: Downloaded newer image for " + ref})
	return http.StatusOK, b.Bytes()
}

func (h *Host) apiContainer(m, rest string, q map[string][]string) (int, []byte) {
	ref, action, _ := strings.Cut(rest, "/")
	kind := "api " + m + " /containers/{id}"
	if action != "" {
		kind += "/" + action
	}
	h.f.stats.count(kind)
	lat := map[string]time.Duration{"start": h.latency().Start, "stop": h.latency().Stop}[action]
	h.wait(lat)
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.state.container(ref)
	if c == nil {
		return apiMessage(http.StatusNotFound, "No such container: "+ref)
	}
	switch {
	case m == http.MethodGet && action == "json":
		return jsonAnswer(http.StatusOK, c.inspect())
	case m == http.MethodPost && action == "start":
		if c.State == "running" {
			return http.StatusNotModified, nil
		}
		c.start()
		h.state.containerChanged(c)
		return http.StatusNoContent, nil
	case m == http.MethodPost && action == "stop":
		if c.State != "running" {
			return http.StatusNotModified, nil
		}
		c.stop()
		return http.StatusNoContent, nil
	case m == http.MethodPost && action == "rename":
		name := ""
		if v := q["name"]; len(v) > 0 {
			name = v[0]
		}
		if o := h.state.container(name); o != nil && o.Name == name && o != c {
			return apiMessage(http.StatusConflict, fmt.Sprintf("Conflict. The container name \"/%s\" is already in use", name))
		}
		c.Name = name
		return http.StatusNoContent, nil
	case m == http.MethodDelete && action == "":
		if c.State == "running" {
			return apiMessage(http.StatusConflict, "cannot remove container \"/"+c.Name+"\": container is running")
		}
		h.state.remove(c)
		return http.StatusNoContent, nil
	}
	h.f.stats.unknownCmd(h.addr + ": api " + m + " /containers/" + rest)
	return apiMessage(http.StatusNotFound, "page not found")
}

func jsonAnswer(status int, v any) (int, []byte) {
	b, _ := json.Marshal(v)
	return status, b
}

func apiMessage(status int, msg string) (int, []byte) {
	return jsonAnswer(status, map[string]string{"message": msg})
}
