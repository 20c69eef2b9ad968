package simfleet

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// apiExec is an exec created through the Engine API (POST
// /containers/{name}/exec): it runs when started, as `docker exec` would.
type apiExec struct {
	container string
	cmd       []string
	exit      int
	ran       bool
}

// apiExecCreate records an exec of the command in the body's Cmd.
func (h *Host) apiExecCreate(container string, body io.Reader) (int, []byte) {
	h.f.stats.count("api POST /containers/{id}/exec")
	var in struct{ Cmd []string }
	if err := json.NewDecoder(body).Decode(&in); err != nil || len(in.Cmd) == 0 {
		return apiMessage(http.StatusBadRequest, "no command")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state.container(container) == nil {
		return apiMessage(http.StatusNotFound, "No such container: "+container)
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	if h.state.execs == nil {
		h.state.execs = map[string]*apiExec{}
	}
	h.state.execs[id] = &apiExec{container: container, cmd: in.Cmd}
	return jsonAnswer(http.StatusCreated, map[string]string{"Id": id})
}

// execStart reports whether req starts an exec, and which.
func execStart(req *http.Request) (string, bool) {
	p := apiVersion.ReplaceAllString(req.URL.Path, "/")
	if req.Method != http.MethodPost || !strings.HasPrefix(p, "/exec/") || !strings.HasSuffix(p, "/start") {
		return "", false
	}
	return strings.TrimSuffix(strings.TrimPrefix(p, "/exec/"), "/start"), true
}

// apiExecStart runs the exec and writes its output to ch as dockerd does
// for a start without an Upgrade header: a 200, then the raw multiplexed
// stream until the connection closes.
func (h *Host) apiExecStart(ch io.Writer, id string) {
	h.f.stats.count("api POST /exec/{id}/start")
	h.mu.Lock()
	e := h.state.execs[id]
	h.mu.Unlock()
	if e == nil {
		fmt.Fprintf(ch, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n")
		return
	}
	var out, errw bytes.Buffer
	x := &cmdCtx{h: h, line: "docker exec " + e.container + " " + strings.Join(e.cmd, " "), stdin: strings.NewReader(""), out: &out, errw: &errw}
	exit := x.dockerExec(append([]string{e.container}, e.cmd...))
	h.mu.Lock()
	e.exit, e.ran = exit, true
	h.mu.Unlock()
	var stream bytes.Buffer
	stream.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n")
	for _, part := range []struct {
		fd byte
		b  []byte
	}{{1, out.Bytes()}, {2, errw.Bytes()}} {
		if len(part.b) == 0 {
			continue
		}
		var hdr [8]byte
		hdr[0] = part.fd
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(part.b)))
		stream.Write(hdr[:])
		stream.Write(part.b)
	}
	_, _ = ch.Write(stream.Bytes())
}

// apiExecInspect answers an exec's state: its exit code once it ran.
func (h *Host) apiExecInspect(id string) (int, []byte) {
	h.f.stats.count("api GET /exec/{id}/json")
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.state.execs[id]
	if e == nil {
		return apiMessage(http.StatusNotFound, "No such exec instance: "+id)
	}
	delete(h.state.execs, id)
	return jsonAnswer(http.StatusOK, map[string]any{"Running": !e.ran, "ExitCode": e.exit})
}
