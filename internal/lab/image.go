package lab

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// An imageFile is one entry of a layer built in memory.
type imageFile struct {
	Path    string // absolute path inside the image
	Mode    int64  // permission bits; a directory when Dir is set
	Dir     bool
	Link    string // symlink target when set
	Content []byte
}

// layer is a gzip-compressed tar with its two digests.
type layer struct {
	blob   []byte
	digest string // of the compressed blob
	diffID string // of the uncompressed tar
}

func buildLayer(files []imageFile) (layer, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	epoch := time.Unix(0, 0)
	for _, f := range files {
		name := strings.TrimPrefix(f.Path, "/")
		h := &tar.Header{Name: name, Mode: f.Mode, ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		case f.Link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Content))
		}
		if err := tw.WriteHeader(h); err != nil {
			return layer{}, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Content); err != nil {
				return layer{}, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return layer{}, err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return layer{}, err
	}
	if err := zw.Close(); err != nil {
		return layer{}, err
	}
	return layer{blob: gz.Bytes(), digest: sha256Digest(gz.Bytes()), diffID: sha256Digest(raw.Bytes())}, nil
}

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// imageConfig is the part of an OCI/Docker image config the lab sets.
type imageConfig struct {
	Env        []string
	Entrypoint []string
	Cmd        []string
	StopSignal string
	Labels     map[string]string
	Exposed    []string
}

// registryClient pushes images to a plain-HTTP registry (distribution v3).
type registryClient struct {
	base string // http://10.231.0.1:5000
	http *http.Client
}

func newRegistryClient(addr string) *registryClient {
	return &registryClient{base: "http://" + addr, http: &http.Client{Timeout: 60 * time.Second}}
}

func (r *registryClient) ping(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.base+"/v2/", nil)
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("registry ping: %s", resp.Status)
	}
	return nil
}

func (r *registryClient) pushBlob(ctx context.Context, repo, digest string, blob []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, fmt.Sprintf("%s/v2/%s/blobs/%s", r.base, repo, digest), nil)
	if resp, err := r.http.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return nil
		}
	}
	loc, err := r.startUpload(ctx, repo)
	if err != nil {
		return fmt.Errorf("start upload of %s: %w", digest, err)
	}
	return r.finishUpload(ctx, loc, digest, bytes.NewReader(blob), int64(len(blob)))
}

// startUpload starts a blob upload to repo and returns where it goes.
func (r *registryClient) startUpload(ctx context.Context, repo string) (*url.URL, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("%s/v2/%s/blobs/uploads/", r.base, repo), nil)
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("POST %s blob upload: %s", repo, resp.Status)
	}
	return r.location(resp)
}

// location resolves the Location of an upload answer.
func (r *registryClient) location(resp *http.Response) (*url.URL, error) {
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return nil, err
	}
	base, _ := url.Parse(r.base)
	return base.ResolveReference(loc), nil
}

// finishUpload completes the upload at loc with its last n bytes from body
// (none: n is 0) as the blob digest.
func (r *registryClient) finishUpload(ctx context.Context, loc *url.URL, digest string, body io.Reader, n int64) error {
	u := *loc
	q := u.Query()
	q.Set("digest", digest)
	u.RawQuery = q.Encode()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), body)
	req.ContentLength = n
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("upload %s: %s: %s", digest, resp.Status, msg)
	}
	return nil
}

// pushImage uploads the layers and a config, then tags the manifest. It
// returns the manifest digest.
func (r *registryClient) pushImage(ctx context.Context, repo, tag string, layers []layer, cfg imageConfig) (string, error) {
	descs := make([]layerDesc, len(layers))
	for i, l := range layers {
		if err := r.pushBlob(ctx, repo, l.digest, l.blob); err != nil {
			return "", err
		}
		descs[i] = layerDesc{digest: l.digest, diffID: l.diffID, size: int64(len(l.blob))}
	}
	return r.pushManifest(ctx, repo, tag, descs, cfg)
}

// layerDesc is a layer the registry holds: the digest and size of its
// compressed blob, the digest of its tar.
type layerDesc struct {
	digest, diffID string
	size           int64
}

// pushManifest uploads the image config of cfg over layers (already in
// the registry), then tags the manifest. It returns the manifest digest.
func (r *registryClient) pushManifest(ctx context.Context, repo, tag string, layers []layerDesc, cfg imageConfig) (string, error) {
	diffIDs := make([]string, len(layers))
	for i, l := range layers {
		diffIDs[i] = l.diffID
	}
	exposed := map[string]struct{}{}
	for _, p := range cfg.Exposed {
		exposed[p] = struct{}{}
	}
	config := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      "1970-01-01T00:00:00Z",
		"config": map[string]any{
			"Env": cfg.Env, "Entrypoint": cfg.Entrypoint, "Cmd": cfg.Cmd,
			"StopSignal": cfg.StopSignal, "Labels": cfg.Labels, "ExposedPorts": exposed,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	cb, err := json.Marshal(config)
	if err != nil {
		return "", err
	}
	cd := sha256Digest(cb)
	if err := r.pushBlob(ctx, repo, cd, cb); err != nil {
		return "", err
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Size      int64  `json:"size"`
		Digest    string `json:"digest"`
	}
	m := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{2, "application/vnd.docker.distribution.manifest.v2+json",
		desc{"application/vnd.docker.container.image.v1+json", int64(len(cb)), cd}, nil}
	for _, l := range layers {
		m.Layers = append(m.Layers, desc{"application/vnd.docker.image.rootfs.diff.tar.gzip", l.size, l.digest})
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, fmt.Sprintf("%s/v2/%s/manifests/%s", r.base, repo, tag), bytes.NewReader(mb))
	req.Header.Set("Content-Type", m.MediaType)
	resp, err := r.http.Do(req)
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("put manifest %s:%s: %s: %s", repo, tag, resp.Status, body)
	}
	return sha256Digest(mb), nil
}

// uniqueTestappLayer is the test app's layer with a file named after tag,
// so that no other tag has the same layer.
func (l *Lab) uniqueTestappLayer(ctx context.Context, tag string) (layer, error) {
	bin, err := buildTestApp(ctx, l.Dir)
	if err != nil {
		return layer{}, err
	}
	return buildLayer(append(baseFiles(), imageFile{Path: "/testapp", Mode: 0o755, Content: bin},
		imageFile{Path: "/release", Mode: 0o644, Content: []byte(tag + "\n")}))
}

// baseFiles are what every lab image carries besides its program.
func baseFiles() []imageFile {
	return []imageFile{
		{Path: "/etc", Dir: true, Mode: 0o755},
		{Path: "/etc/passwd", Mode: 0o644, Content: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nhaproxy:x:101:101::/var/lib/haproxy:/sbin/nologin\n")},
		{Path: "/etc/group", Mode: 0o644, Content: []byte("root:x:0:\nnogroup:x:65534:\nhaproxy:x:101:\n")},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
	}
}

// haproxyFiles collects the Debian haproxy binary, every shared object it
// loads (as the dynamic loader resolves them) and the loader itself.
func haproxyFiles(ctx context.Context) ([]imageFile, error) {
	bin := "/usr/sbin/haproxy"
	out, err := runOut(ctx, "ldd", bin)
	if err != nil {
		return nil, fmt.Errorf("ldd %s (is the haproxy package installed?): %w", bin, err)
	}
	paths := []string{bin}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			paths = append(paths, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			paths = append(paths, f[0]) // the loader
		}
	}
	files := baseFiles()
	dirs := map[string]bool{"/etc": true, "/tmp": true}
	addDirs := func(p string) {
		for d := path.Dir(p); d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			files = append(files, imageFile{Path: d, Dir: true, Mode: 0o755})
		}
	}
	for _, p := range paths {
		// Keep the path the loader asked for; copy the resolved file's bytes.
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		addDirs(p)
		files = append(files, imageFile{Path: p, Mode: 0o755, Content: b})
	}
	// Debian links /lib64 and /lib into /usr in merged-usr layouts; the
	// loader path in the binary's header must exist as written.
	for _, d := range []string{"/run", "/run/haproxy", "/etc/haproxy", "/var", "/var/lib", "/var/lib/haproxy"} {
		if !dirs[d] {
			dirs[d] = true
			files = append(files, imageFile{Path: d, Dir: true, Mode: 0o755})
		}
	}
	files = append(files, imageFile{Path: "/etc/haproxy/haproxy.cfg", Mode: 0o644, Content: []byte(defaultHAProxyConfig)})
	return files, nil
}

// defaultHAProxyConfig lets the image start on its own; capstan mounts its
// own configuration over it.
const defaultHAProxyConfig = `global
    stats socket /run/haproxy/admin.sock mode 600 level admin expose-fd listeners
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend http
    bind :80
    http-request return status 503 content-type text/plain string "no backend configured"
`
