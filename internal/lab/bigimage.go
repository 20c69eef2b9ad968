package lab

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"time"
)

// The size of the big test app image (PushBigTestapp): BigTestappLayers
// layers of BigTestappLayerSize random bytes each on top of the test
// app's own layer, about 315 MB in all, as a real release image is.
const (
	BigTestappLayers    = 10
	BigTestappLayerSize = 30 << 20
)

// reTag is what a Docker tag may be.
var reTag = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// PushBigTestapp pushes testapp:tag as a realistic release image: the
// test app's layer (the same binary, labels and config as every tag, with
// APP_VERSION=tag, plus a file named after the tag, as PushTestappVersion)
// and BigTestappLayers layers of BigTestappLayerSize random bytes, which
// no compression shrinks. The bytes are deterministic per tag and layer
// (ChaCha8 seeded with the SHA-256 of the tag and the layer's index), so
// two tags share no layer and pushing a tag again gives the same image.
// Each layer streams to the registry as it is generated: no temporary file
// and a few buffers in memory. A tag the registry has already is not pushed
// again. It is not part of Up (it would slow every bring-up); a test calls
// it for the tags it needs.
func (l *Lab) PushBigTestapp(ctx context.Context, tag string) error {
	rc := newRegistryClient(l.RegistryAddr)
	return pushBigTestapp(ctx, rc, tag, BigTestappLayers, BigTestappLayerSize, func() (layer, error) {
		return l.uniqueTestappLayer(ctx, tag)
	})
}

// pushBigTestapp pushes testapp:tag with the layer appLayer makes and
// layers random layers of size bytes, unless the registry has the tag.
func pushBigTestapp(ctx context.Context, rc *registryClient, tag string, layers int, size int64, appLayer func() (layer, error)) error {
	if !reTag.MatchString(tag) {
		return fmt.Errorf("lab: %q is not an image tag", tag)
	}
	if ok, err := rc.hasManifest(ctx, TestAppRepo, tag); err != nil || ok {
		return err
	}
	app, err := appLayer()
	if err != nil {
		return err
	}
	if err := rc.pushBlob(ctx, TestAppRepo, app.digest, app.blob); err != nil {
		return err
	}
	descs := []layerDesc{{digest: app.digest, diffID: app.diffID, size: int64(len(app.blob))}}
	for i := range layers {
		d, err := rc.pushStream(ctx, TestAppRepo, func(w io.Writer) (string, error) {
			return writeRandomLayer(w, fmt.Sprintf("big/%02d.bin", i), size, randomSource(tag, i))
		})
		if err != nil {
			return fmt.Errorf("push big layer %d of %s: %w", i, tag, err)
		}
		descs = append(descs, d)
	}
	_, err = rc.pushManifest(ctx, TestAppRepo, tag, descs, testappConfig([]string{"APP_VERSION=" + tag}))
	return err
}

// randomSource is the deterministic random bytes of layer i of tag.
func randomSource(tag string, i int) io.Reader {
	return rand.NewChaCha8(sha256.Sum256([]byte("capstan lab big testapp\x00" + tag + "\x00" + strconv.Itoa(i))))
}

// writeRandomLayer writes to w a gzip-compressed tar holding the
// directory of name and the file name with size bytes read from src, and
// returns the tar's digest (the layer's diff ID). The gzip stream stores
// the bytes as they are: random bytes do not compress, and trying costs
// time.
func writeRandomLayer(w io.Writer, name string, size int64, src io.Reader) (string, error) {
	zw, err := gzip.NewWriterLevel(w, gzip.NoCompression)
	if err != nil {
		return "", err
	}
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, diff))
	epoch := time.Unix(0, 0)
	if dir := path.Dir(name); dir != "." {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return "", err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return "", err
	}
	if _, err := io.CopyN(tw, src, size); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return digestOf(diff), nil
}

func digestOf(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// countWriter counts the bytes written through it.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// pushStream uploads to repo the blob write produces, streaming it (one
// PATCH of unknown length, then the PUT that names its digest), and
// returns the layer: the blob's digest and size, and the diff ID write
// returns.
func (r *registryClient) pushStream(ctx context.Context, repo string, write func(io.Writer) (string, error)) (layerDesc, error) {
	loc, err := r.startUpload(ctx, repo)
	if err != nil {
		return layerDesc{}, err
	}
	pr, pw := io.Pipe()
	sum, count := sha256.New(), &countWriter{}
	type written struct {
		diffID string
		err    error
	}
	done := make(chan written, 1)
	go func() {
		d, err := write(io.MultiWriter(pw, sum, count))
		pw.CloseWithError(err)
		done <- written{d, err}
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, loc.String(), pr)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := r.stream().Do(req)
	pr.CloseWithError(io.ErrClosedPipe) // ends write if the request stopped reading
	w := <-done
	if err != nil {
		if w.err != nil {
			return layerDesc{}, w.err
		}
		return layerDesc{}, err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if w.err != nil {
		return layerDesc{}, w.err
	}
	if resp.StatusCode != http.StatusAccepted {
		return layerDesc{}, fmt.Errorf("PATCH %s blob: %s: %s", repo, resp.Status, msg)
	}
	if loc, err = r.location(resp); err != nil {
		return layerDesc{}, err
	}
	d := layerDesc{digest: digestOf(sum), diffID: w.diffID, size: count.n}
	return d, r.finishUpload(ctx, loc, d.digest, nil, 0)
}

// stream is r's client without its overall timeout, for uploads that take
// as long as their size needs (ctx bounds them).
func (r *registryClient) stream() *http.Client {
	c := *r.http
	c.Timeout = 0
	return &c
}

// hasManifest reports whether the registry has repo:tag.
func (r *registryClient) hasManifest(ctx context.Context, repo, tag string) (bool, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, fmt.Sprintf("%s/v2/%s/manifests/%s", r.base, repo, tag), nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := r.http.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("HEAD %s:%s manifest: %s", repo, tag, resp.Status)
}
