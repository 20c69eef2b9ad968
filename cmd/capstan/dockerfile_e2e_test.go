package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/capstan-dev/capstan/internal/lab"
)

// TestE2EContainer_RuntimeImage builds the Dockerfile's final stage on a
// lab host's dockerd and runs it. The build stage needs a golang base image
// that cannot be pulled here, so the test compiles the same static binary
// and feeds the final stage the files the build stage would produce: the
// final stage's instructions are used as written.
func TestE2EContainer_RuntimeImage(t *testing.T) {
	l := lab.Start(t, 1)
	ctx := context.Background()
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	final := string(df[strings.LastIndex(string(df), "\nFROM scratch"):])
	dir, err := os.MkdirTemp("/tmp", "capstan-image-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// What the build stage leaves in /out, and the CA bundle it copies.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=image-test", "-o", filepath.Join(dir, "out", "capstan"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "out", "state"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "out", "passwd"), []byte("capstan:x:65532:65532:capstan:/var/lib/capstan:/sbin/nologin\n"), 0o644))
	must(os.MkdirAll(filepath.Join(dir, "etc/ssl/certs"), 0o755))
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	must(err)
	must(os.WriteFile(filepath.Join(dir, "etc/ssl/certs/ca-certificates.crt"), ca, 0o644))
	// COPY --from=build X → COPY X (paths relative to the context).
	fromBuild := regexp.MustCompile(`--from=build (--chown=\S+ )?/`)
	stage := fromBuild.ReplaceAllString(final, "$1")
	if strings.Contains(stage, "--from=") {
		t.Fatalf("final stage still copies from another stage:\n%s", stage)
	}
	must(os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(stage), 0o644))

	tag := "capstan-image-test:latest"
	if out, err := l.Exec(ctx, 0, "docker", "build", "-q", "-t", tag, dir); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	defer l.Exec(ctx, 0, "docker", "rmi", "-f", tag)
	out, err := l.Exec(ctx, 0, "docker", "run", "--rm", tag, "version")
	if err != nil || !strings.Contains(out, "capstan image-test") {
		t.Fatalf("docker run version: %v\n%s", err, out)
	}
	cfg, err := l.Exec(ctx, 0, "docker", "image", "inspect", "-f", "{{.Config.User}} {{.Size}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}", tag)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(cfg)
	size, _ := strconv.ParseInt(f[1], 10, 64)
	t.Logf("runtime image: user %s, %.1f MB, entrypoint %s %s", f[0], float64(size)/1e6, f[2], f[3])
	if f[0] != "65532:65532" {
		t.Errorf("image runs as %q, want the non-root 65532:65532", f[0])
	}
	if size > 30e6 {
		t.Errorf("image is %d bytes, goal ≤ 30 MB", size)
	}
	if !strings.Contains(f[3], `"serve"`) {
		t.Errorf("default command %s does not run serve", f[3])
	}
}
