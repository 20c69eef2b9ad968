package lab

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capstan-dev/capstan/internal/testport"
)

// untar reads a gzip-compressed tar: name -> content (nil for a
// directory).
func untar(t *testing.T, blob []byte) map[string][]byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		if h.Typeflag == tar.TypeReg {
			if b, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
		out[h.Name] = b
	}
}

func rawTar(t *testing.T, blob []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestWriteRandomLayer: a layer is a valid gzip'd tar with the directory
// and one file of exactly the size asked, from the tag's random source;
// its diff ID is the tar's digest; the bytes do not compress; the same tag
// and index give the same layer, another tag or index another one.
func TestWriteRandomLayer(t *testing.T) {
	const size = 1<<20 + 123
	layerOf := func(tag string, i int) ([]byte, string) {
		var b bytes.Buffer
		diffID, err := writeRandomLayer(&b, "big/03.bin", size, randomSource(tag, i))
		if err != nil {
			t.Fatal(err)
		}
		return b.Bytes(), diffID
	}
	blob, diffID := layerOf("v7", 3)
	files := untar(t, blob)
	if len(files) != 2 || files["big/"] != nil || len(files["big/03.bin"]) != size {
		t.Fatalf("layer holds %d entries, big/03.bin of %d bytes", len(files), len(files["big/03.bin"]))
	}
	want := make([]byte, size)
	io.ReadFull(randomSource("v7", 3), want)
	if !bytes.Equal(files["big/03.bin"], want) {
		t.Error("the file is not the tag's random bytes")
	}
	raw := rawTar(t, blob)
	if s := sha256.Sum256(raw); diffID != "sha256:"+hex.EncodeToString(s[:]) {
		t.Errorf("diff ID %s is not the tar's digest", diffID)
	}
	var packed bytes.Buffer
	fw, _ := flate.NewWriter(&packed, flate.BestCompression)
	fw.Write(want)
	fw.Close()
	if packed.Len() < size*99/100 {
		t.Errorf("the random bytes compress to %d of %d", packed.Len(), size)
	}
	if again, d := layerOf("v7", 3); !bytes.Equal(again, blob) || d != diffID {
		t.Error("the same tag and index gave another layer")
	}
	for _, other := range []struct {
		tag string
		i   int
	}{{"v8", 3}, {"v7", 4}} {
		if b, d := layerOf(other.tag, other.i); d == diffID || bytes.Equal(b[:1024], blob[:1024]) && bytes.Equal(b[len(b)-1024:], blob[len(blob)-1024:]) {
			t.Errorf("%s layer %d is the same as v7's layer 3", other.tag, other.i)
		}
	}
}

// startRegistry runs a private distribution registry (the lab's binary,
// not the lab's registry) on a free local port, its storage in a temp dir.
func startRegistry(t *testing.T) string {
	t.Helper()
	bin := "/var/cache/capstan-lab/bin/registry"
	if _, err := os.Stat(bin); err != nil {
		p, err := exec.LookPath("registry")
		if err != nil {
			t.Skip("no registry binary (the lab's tools cache builds it)")
		}
		bin = p
	}
	addr := testport.Addr(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.Env = append(cleanEnv(), "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("registry log:\n%s", logs.String())
		}
	})
	if err := waitTCP(context.Background(), addr, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	return addr
}

// countingTransport counts the requests it carries.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// get fetches path from the registry, failing the test on anything but
// 200.
func get(t *testing.T, addr, path string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	return b
}

type pushedManifest struct {
	Config struct{ Digest string }
	Layers []struct {
		Digest string
		Size   int64
	}
}

// TestPushBigTestapp_RealRegistry pushes small "big" images to a real
// registry: the manifest lists the app layer and each random layer with
// its streamed size, every blob reads back with its digest and content,
// the config is the test app's with APP_VERSION=tag and the layers' diff
// IDs; a second push of the tag makes one request (HEAD) and builds
// nothing; another tag shares no layer; a bad tag is refused.
func TestPushBigTestapp_RealRegistry(t *testing.T) {
	addr := startRegistry(t)
	ctx := context.Background()
	rc := newRegistryClient(addr)
	builds := 0
	appLayer := func(tag string) func() (layer, error) {
		return func() (layer, error) {
			builds++
			return buildLayer(append(baseFiles(), imageFile{Path: "/release", Mode: 0o644, Content: []byte(tag + "\n")}))
		}
	}
	const n, size = 3, 256<<10 + 7
	if err := pushBigTestapp(ctx, rc, "big1", n, size, appLayer("big1")); err != nil {
		t.Fatal(err)
	}
	var m pushedManifest
	if err := json.Unmarshal(get(t, addr, "/v2/"+TestAppRepo+"/manifests/big1"), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != n+1 {
		t.Fatalf("%d layers, want %d", len(m.Layers), n+1)
	}
	var diffIDs []string
	for i, l := range m.Layers {
		blob := get(t, addr, "/v2/"+TestAppRepo+"/blobs/"+l.Digest)
		if s := sha256.Sum256(blob); "sha256:"+hex.EncodeToString(s[:]) != l.Digest || int64(len(blob)) != l.Size {
			t.Errorf("layer %d: blob of %d bytes does not match %s/%d", i, len(blob), l.Digest, l.Size)
		}
		s := sha256.Sum256(rawTar(t, blob))
		diffIDs = append(diffIDs, "sha256:"+hex.EncodeToString(s[:]))
		if i > 0 {
			if f := untar(t, blob)[fmt.Sprintf("big/%02d.bin", i-1)]; len(f) != size {
				t.Errorf("layer %d holds %d random bytes, want %d", i, len(f), size)
			}
		}
	}
	var cfg struct {
		Config struct {
			Env    []string
			Labels map[string]string
		}
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(get(t, addr, "/v2/"+TestAppRepo+"/blobs/"+m.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.Labels["service"] != TestAppRepo || !slices.Contains(cfg.Config.Env, "APP_VERSION=big1") || !slices.Equal(cfg.RootFS.DiffIDs, diffIDs) {
		t.Errorf("config %+v, want the test app's, APP_VERSION=big1, diff IDs %v", cfg, diffIDs)
	}

	counter := &countingTransport{}
	counted := newRegistryClient(addr)
	counted.http.Transport = counter
	builds = 0
	if err := pushBigTestapp(ctx, counted, "big1", n, size, appLayer("big1")); err != nil {
		t.Fatal(err)
	}
	if counter.n.Load() != 1 || builds != 0 {
		t.Errorf("second push of big1: %d requests and %d builds, want 1 and 0", counter.n.Load(), builds)
	}

	if err := pushBigTestapp(ctx, rc, "big2", n, size, appLayer("big2")); err != nil {
		t.Fatal(err)
	}
	var m2 pushedManifest
	if err := json.Unmarshal(get(t, addr, "/v2/"+TestAppRepo+"/manifests/big2"), &m2); err != nil {
		t.Fatal(err)
	}
	for _, l := range m2.Layers {
		if slices.ContainsFunc(m.Layers, func(o struct {
			Digest string
			Size   int64
		}) bool {
			return o.Digest == l.Digest
		}) {
			t.Errorf("big2 shares layer %s with big1", l.Digest)
		}
	}

	counter.n.Store(0)
	for _, bad := range []string{"../x", "", "a:b", "-x"} {
		if err := pushBigTestapp(ctx, counted, bad, n, size, appLayer(bad)); err == nil {
			t.Errorf("tag %q pushed", bad)
		}
	}
	if counter.n.Load() != 0 {
		t.Errorf("bad tags made %d requests", counter.n.Load())
	}
}
