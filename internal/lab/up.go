package lab

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// labState is what Up records in Dir/lab.json.
type labState struct {
	Hosts  int               `json:"hosts"`
	Images map[string]string `json:"images"` // ref -> manifest digest
	// ImagesRev is imagesRev when the images were pushed; a change to how
	// the lab builds images bumps it so a running lab re-pushes them.
	ImagesRev int `json:"images_rev"`
}

const imagesRev = 4

// Up brings the lab up, or completes it if parts are missing, and returns
// it. Calls from several processes at once are serialized by a lock file.
// An existing lab with more hosts than asked keeps them.
func Up(ctx context.Context, opts Options) (*Lab, error) {
	opts.fill()
	if err := Check(); err != nil {
		return nil, err
	}
	if opts.Hosts > MaxHosts {
		return nil, fmt.Errorf("lab: at most %d hosts", MaxHosts)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	unlock, err := lockFile(filepath.Join(opts.Dir, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	var st labState
	if b, err := os.ReadFile(filepath.Join(opts.Dir, "lab.json")); err == nil {
		_ = json.Unmarshal(b, &st)
	}
	if st.Hosts < opts.Hosts {
		st.Hosts = opts.Hosts
	}
	l := newLab(opts.Dir, st.Hosts)
	logf := opts.Logf

	if err := l.ensureKeys(); err != nil {
		return nil, fmt.Errorf("lab keys: %w", err)
	}
	if err := l.ensureBridge(ctx); err != nil {
		return nil, fmt.Errorf("lab bridge: %w", err)
	}
	if err := l.ensureNSDir(ctx); err != nil {
		return nil, fmt.Errorf("lab namespace dir: %w", err)
	}
	for i := range l.Hosts {
		if err := l.ensureHost(ctx, i, logf); err != nil {
			return nil, fmt.Errorf("lab host %s: %w", hostName(i), err)
		}
	}
	if err := l.ensureRegistry(ctx, opts.ToolsDir, logf); err != nil {
		return nil, fmt.Errorf("lab registry: %w", err)
	}
	if err := l.waitHosts(ctx); err != nil {
		return nil, err
	}
	if st.Images == nil || st.ImagesRev != imagesRev || !l.imagesPresent(ctx, st.Images) {
		imgs, err := l.pushImages(ctx, logf)
		if err != nil {
			return nil, fmt.Errorf("lab images: %w", err)
		}
		st.Images, st.ImagesRev = imgs, imagesRev
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(filepath.Join(l.Dir, "lab.json"), b, 0o600); err != nil {
		return nil, err
	}
	return l, nil
}

func newLab(dir string, n int) *Lab {
	l := &Lab{
		Dir:          dir,
		RegistryAddr: RegistryAddr,
		KnownHosts:   filepath.Join(dir, "known_hosts"),
		Identity:     filepath.Join(dir, "id_ed25519"),
	}
	for i := 0; i < n; i++ {
		l.Hosts = append(l.Hosts, Host{Name: hostName(i), Addr: hostAddr(i)})
	}
	return l
}

// Check reports (wrapping ErrUnavailable) why the lab cannot run here.
func Check() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("%w: needs Linux, this is %s", ErrUnavailable, runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (network namespaces, dockerd)", ErrUnavailable)
	}
	var missing []string
	for _, tool := range []string{"ip", "nsenter", "unshare", "mount", "umount", "iptables", "dockerd", "docker", "ldd", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	for _, p := range []string{"/usr/sbin/sshd", "/usr/sbin/haproxy"} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s (run .ci/setup)", ErrUnavailable, strings.Join(missing, ", "))
	}
	return nil
}

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// ensureKeys writes the client key and every host's host key once, and the
// known_hosts file listing the hosts.
func (l *Lab) ensureKeys() error {
	pub, err := ensureKey(l.Identity)
	if err != nil {
		return err
	}
	if err := os.WriteFile(l.Identity+".pub", ssh.MarshalAuthorizedKey(pub), 0o644); err != nil {
		return err
	}
	var kh bytes.Buffer
	for i, h := range l.Hosts {
		hd := l.hostDir(i)
		for _, d := range []string{"ssh", "root/.ssh", "run/sshd", "docker", "etc-docker"} {
			if err := os.MkdirAll(filepath.Join(hd, d), 0o700); err != nil {
				return err
			}
		}
		_ = os.Chmod(filepath.Join(hd, "run"), 0o755)
		_ = os.Chmod(filepath.Join(hd, "run/sshd"), 0o755)
		hpub, err := ensureKey(filepath.Join(hd, "ssh", "ssh_host_ed25519_key"))
		if err != nil {
			return err
		}
		fmt.Fprintf(&kh, "%s %s", h.Addr, ssh.MarshalAuthorizedKey(hpub))
		if err := os.WriteFile(filepath.Join(hd, "root/.ssh/authorized_keys"), ssh.MarshalAuthorizedKey(pub), 0o600); err != nil {
			return err
		}
	}
	return os.WriteFile(l.KnownHosts, kh.Bytes(), 0o644)
}

// ensureKey creates an OpenSSH ed25519 private key at path unless one is
// there, and returns its public key.
func ensureKey(path string) (ssh.PublicKey, error) {
	if b, err := os.ReadFile(path); err == nil {
		k, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return k.PublicKey(), nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "capstan-lab")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	return signer.PublicKey(), nil
}

func (l *Lab) ensureBridge(ctx context.Context) error {
	if !linkExists(Bridge) {
		if err := runs(ctx,
			[]string{"ip", "link", "add", Bridge, "type", "bridge"},
			[]string{"ip", "addr", "add", GatewayAddr + "/24", "dev", Bridge},
			[]string{"ip", "link", "set", Bridge, "up"},
		); err != nil {
			return err
		}
	}
	// Docker's FORWARD policy (when a dockerd runs in the root namespace)
	// drops frames bridged between two namespaces; accept the lab's own.
	rule := []string{"FORWARD", "-i", Bridge, "-o", Bridge, "-j", "ACCEPT"}
	if _, err := runOut(ctx, "iptables", append([]string{"-C"}, rule...)...); err != nil {
		if _, err := runOut(ctx, "iptables", append([]string{"-I"}, rule...)...); err != nil {
			return err
		}
	}
	return nil
}

// ensureNSDir makes the directory holding the mount and UTS namespace
// files a private bind mount, as unshare(1) requires for persistent
// namespaces.
func (l *Lab) ensureNSDir(ctx context.Context) error {
	d := l.nsDir()
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	if isMountpoint(d) {
		return nil
	}
	return runs(ctx, []string{"mount", "--bind", d, d}, []string{"mount", "--make-private", d})
}

func (l *Lab) ensureHost(ctx context.Context, i int, logf func(string, ...any)) error {
	n, addr, hd := hostName(i), hostAddr(i), l.hostDir(i)
	if _, err := os.Stat("/run/netns/" + n); err != nil {
		veth := "v" + n
		if linkExists(veth) {
			_ = runs(ctx, []string{"ip", "link", "del", veth})
		}
		if err := runs(ctx,
			[]string{"ip", "netns", "add", n},
			[]string{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n},
			[]string{"ip", "link", "set", veth, "master", Bridge, "up"},
			[]string{"ip", "-n", n, "addr", "add", addr + "/24", "dev", "eth0"},
			[]string{"ip", "-n", n, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", n, "link", "set", "lo", "up"},
		); err != nil {
			return err
		}
	}
	mntNS := filepath.Join(l.nsDir(), n+".mnt")
	utsNS := filepath.Join(l.nsDir(), n+".uts")
	if !isMountpoint(mntNS) || !isMountpoint(utsNS) {
		for _, p := range []string{mntNS, utsNS} {
			if isMountpoint(p) {
				_ = runs(ctx, []string{"umount", p})
			}
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				return err
			}
		}
		for _, p := range []string{"/var/lib/docker", "/etc/docker"} {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		}
		script := fmt.Sprintf(`set -e
hostname %[1]s
# Drop this namespace's copies of mounts that would pin other namespaces or
# belong to other hosts (lab.md: "A new mount namespace inherits copies").
sed -n 's/^[^ ]* [^ ]* [^ ]* [^ ]* \([^ ]*\) .* - \([^ ]*\) .*/\2 \1/p' /proc/self/mountinfo |
while read -r fs mp; do
  case "$fs:$mp" in
    nsfs:*|overlay:*|*:/run/netns*|*:/run/docker/*|*:/var/lib/docker/*|*:%[2]s/hosts/*) umount -l "$mp" 2>/dev/null || true ;;
  esac
done
mount --bind %[3]s/root /root
mount --bind %[3]s/run /run
mount --bind %[3]s/docker /var/lib/docker
mount --bind %[3]s/etc-docker /etc/docker
`, n, l.Dir, hd)
		if _, err := runOut(ctx, "unshare", "--mount="+mntNS, "--uts="+utsNS, "--propagation", "private", "--", "/bin/sh", "-c", script); err != nil {
			return err
		}
	}
	daemon := map[string]any{
		// The lab registry, and any registry a test runs on the bridge
		// (e.g. one that injects faults in front of it).
		"insecure-registries": []string{RegistryAddr, Subnet + ".0/24"},
		// A failed layer download fails the pull at once, instead of after
		// Docker's 5 attempts with a growing back-off (about a minute):
		// the registry fault tests see the failure capstan must report.
		"max-download-attempts": 1,
		"cgroup-parent":         "/" + n,
		"shutdown-timeout":      5,
	}
	b, _ := json.MarshalIndent(daemon, "", "  ")
	if err := os.WriteFile(filepath.Join(hd, "etc-docker", "daemon.json"), b, 0o644); err != nil {
		return err
	}
	if !pidAlive(filepath.Join(hd, "dockerd.pid")) {
		logf("starting dockerd on %s", n)
		// A dockerd killed uncleanly leaves its pid file; dockerd refuses to
		// start while it names a live process, so drop it.
		_ = os.Remove(filepath.Join(hd, "run", "docker.pid"))
		if err := l.spawn(i, "dockerd", filepath.Join(hd, "dockerd.log"), "dockerd"); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(hd, "sshd_config"), []byte(sshdConfig(addr, hd)), 0o600); err != nil {
		return err
	}
	if !pidAlive(filepath.Join(hd, "sshd.pid")) {
		logf("starting sshd on %s", n)
		if err := l.StartSSHD(i); err != nil {
			return err
		}
	}
	return nil
}

func sshdConfig(addr, hd string) string {
	return fmt.Sprintf(`# capstan lab host
ListenAddress %s:22
HostKey %s/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AuthorizedKeysFile .ssh/authorized_keys
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
SetEnv DOCKER_HOST=unix:///var/run/docker.sock
Subsystem sftp internal-sftp
LogLevel INFO
# Every command line a client runs is appended to CommandLog (the secrets
# audit reads it), then run as sshd would run it.
ForceCommand /bin/sh -c 'printf "%%s\n" "$SSH_ORIGINAL_COMMAND" >> /run/capstan-lab-commands.log; exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"'
`, addr, hd)
}

// StartSSHD starts host i's sshd unless it runs.
func (l *Lab) StartSSHD(i int) error {
	hd := l.hostDir(i)
	if pidAlive(filepath.Join(hd, "sshd.pid")) {
		return nil
	}
	if err := l.spawn(i, "sshd", filepath.Join(hd, "sshd.log"), "/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(hd, "sshd_config")); err != nil {
		return err
	}
	return waitTCP(context.Background(), hostAddr(i)+":22", 10*time.Second)
}

// StopSSHD kills host i's sshd and every session it serves.
func (l *Lab) StopSSHD(i int) error {
	pids, err := l.namespacePIDs(i)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if comm(pid) == "sshd" {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = os.Remove(filepath.Join(l.hostDir(i), "sshd.pid"))
	return nil
}

// spawn starts a daemon in host i's namespaces, detached from the caller,
// and records its pid in hostDir/name.pid.
func (l *Lab) spawn(i int, name, logPath string, argv ...string) error {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	args := append(l.nsenterArgs(i), argv...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return os.WriteFile(filepath.Join(l.hostDir(i), name+".pid"), []byte(strconv.Itoa(pid)), 0o600)
}

// cleanEnv is the environment daemons start with: no DOCKER_HOST or proxy
// settings leaking in from the caller.
func cleanEnv() []string {
	return []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}
}

func (l *Lab) waitHosts(ctx context.Context) error {
	for i := range l.Hosts {
		if err := waitDocker(ctx, l.DockerSocket(i), 30*time.Second); err != nil {
			return fmt.Errorf("lab host %s: dockerd: %w (log: %s)", hostName(i), err, filepath.Join(l.hostDir(i), "dockerd.log"))
		}
		if err := waitTCP(ctx, hostAddr(i)+":22", 10*time.Second); err != nil {
			return fmt.Errorf("lab host %s: sshd: %w", hostName(i), err)
		}
	}
	return nil
}

// waitDocker polls the Docker API's /_ping on a unix socket.
func waitDocker(ctx context.Context, sock string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer on %s after %s: %w", sock, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *Lab) ensureRegistry(ctx context.Context, toolsDir string, logf func(string, ...any)) error {
	pidPath := filepath.Join(l.Dir, "registry.pid")
	if pidAlive(pidPath) {
		return waitTCP(ctx, RegistryAddr, 10*time.Second)
	}
	bin, err := registryBinary(ctx, toolsDir, logf)
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(l.Dir, "registry"), RegistryAddr)
	cfgPath := filepath.Join(l.Dir, "registry.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(l.Dir, "registry.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = lf, lf
	// distribution v3 exports OpenTelemetry traces to localhost:4318 by default.
	cmd.Env = append(cleanEnv(), "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(pid)), 0o600); err != nil {
		return err
	}
	return waitTCP(ctx, RegistryAddr, 15*time.Second)
}

// registryBinary finds the distribution registry, building it into the
// tools cache on first use.
func registryBinary(ctx context.Context, toolsDir string, logf func(string, ...any)) (string, error) {
	cached := filepath.Join(toolsDir, "bin", "registry")
	if _, err := os.Stat(cached); err == nil {
		return cached, nil
	}
	if p, err := exec.LookPath("registry"); err == nil {
		return p, nil
	}
	logf("building the registry (%s) into %s; first time only", registryModule, toolsDir)
	cmd := exec.CommandContext(ctx, "go", "install", registryModule)
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Join(toolsDir, "bin"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s: %w\n%s", registryModule, err, out)
	}
	return cached, nil
}

// imagesPresent reports whether the registry still serves every image the
// lab pushed.
func (l *Lab) imagesPresent(ctx context.Context, imgs map[string]string) bool {
	c := &http.Client{Timeout: 5 * time.Second}
	for ref := range imgs {
		repo, tag, _ := strings.Cut(strings.TrimPrefix(ref, RegistryAddr+"/"), ":")
		req, _ := http.NewRequestWithContext(ctx, http.MethodHead, "http://"+RegistryAddr+"/v2/"+repo+"/manifests/"+tag, nil)
		req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
		resp, err := c.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
	}
	return len(imgs) > 0
}

// testappConfig is the image config of a testapp tag with env.
func testappConfig(env []string) imageConfig {
	return imageConfig{
		Env:        append([]string{"PATH=/"}, env...),
		Entrypoint: []string{"/testapp"},
		StopSignal: "SIGTERM",
		Exposed:    []string{"3000/tcp"},
		// Kamal refuses an image without the service label its builder adds.
		Labels: map[string]string{"service": TestAppRepo, "org.opencontainers.image.title": "capstan lab test app"},
	}
}

// PushUniqueTestapp pushes testapp:tag, a version no host has: v2's image
// whose one layer also holds a file named after the tag, so a deploy of it
// pulls the whole layer (6 MB), the way a new release with a new binary
// does.
func (l *Lab) PushUniqueTestapp(ctx context.Context, tag string) error {
	return l.pushUniqueTestapp(ctx, tag, TestAppTags["v2"])
}

// PushTestappVersion is PushUniqueTestapp with APP_VERSION=tag: the new
// image answers with its own tag, so a test tells it from every other.
func (l *Lab) PushTestappVersion(ctx context.Context, tag string) error {
	return l.pushUniqueTestapp(ctx, tag, []string{"APP_VERSION=" + tag})
}

func (l *Lab) pushUniqueTestapp(ctx context.Context, tag string, env []string) error {
	appLayer, err := l.uniqueTestappLayer(ctx, tag)
	if err != nil {
		return err
	}
	_, err = newRegistryClient(l.RegistryAddr).pushImage(ctx, TestAppRepo, tag, []layer{appLayer}, testappConfig(env))
	return err
}

// pushImages builds the test app and the HAProxy image and pushes every
// tag. It returns ref -> manifest digest.
func (l *Lab) pushImages(ctx context.Context, logf func(string, ...any)) (map[string]string, error) {
	logf("building and pushing lab images")
	bin, err := buildTestApp(ctx, l.Dir)
	if err != nil {
		return nil, err
	}
	appFiles := append(baseFiles(), imageFile{Path: "/testapp", Mode: 0o755, Content: bin})
	appLayer, err := buildLayer(appFiles)
	if err != nil {
		return nil, err
	}
	rc := newRegistryClient(RegistryAddr)
	if err := rc.ping(ctx); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for tag, env := range TestAppTags {
		d, err := rc.pushImage(ctx, TestAppRepo, tag, []layer{appLayer}, testappConfig(env))
		if err != nil {
			return nil, err
		}
		out[RegistryAddr+"/"+TestAppRepo+":"+tag] = d
	}
	hf, err := haproxyFiles(ctx)
	if err != nil {
		return nil, err
	}
	hl, err := buildLayer(hf)
	if err != nil {
		return nil, err
	}
	d, err := rc.pushImage(ctx, HAProxyRepo, HAProxyTag, []layer{hl}, imageConfig{
		Env:        []string{"PATH=/usr/sbin:/usr/bin"},
		Entrypoint: []string{"/usr/sbin/haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"},
		StopSignal: "SIGUSR1",
		Exposed:    []string{"80/tcp"},
	})
	if err != nil {
		return nil, err
	}
	out[RegistryAddr+"/"+HAProxyRepo+":"+HAProxyTag] = d

	// The kamal-proxy stand-in, under the name and tag Kamal boots.
	kp, err := buildLabProgram(ctx, l.Dir, "kamalproxy")
	if err != nil {
		return nil, err
	}
	kl, err := buildLayer(append(baseFiles(),
		imageFile{Path: "/usr", Dir: true, Mode: 0o755}, imageFile{Path: "/usr/local", Dir: true, Mode: 0o755},
		imageFile{Path: "/usr/local/bin", Dir: true, Mode: 0o755},
		imageFile{Path: "/usr/local/bin/kamal-proxy", Mode: 0o755, Content: kp}))
	if err != nil {
		return nil, err
	}
	d, err = rc.pushImage(ctx, KamalProxyRepo, KamalProxyTag, []layer{kl}, imageConfig{
		Env:     []string{"PATH=/usr/local/bin"},
		Cmd:     []string{"kamal-proxy", "run"},
		Exposed: []string{"80/tcp", "443/tcp"},
		Labels:  map[string]string{"org.opencontainers.image.title": "kamal-proxy", "org.opencontainers.image.description": "capstan lab stand-in, not kamal-proxy"},
	})
	if err != nil {
		return nil, err
	}
	out[RegistryAddr+"/"+KamalProxyRepo+":"+KamalProxyTag] = d
	return out, nil
}

// buildTestApp compiles internal/lab/testapp as a static binary.
func buildTestApp(ctx context.Context, dir string) ([]byte, error) {
	return buildLabProgram(ctx, dir, "testapp")
}

// buildLabProgram compiles internal/lab/NAME as a static binary.
func buildLabProgram(ctx context.Context, dir, name string) ([]byte, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return nil, errors.New("cannot locate the lab's sources")
	}
	src := filepath.Join(filepath.Dir(self), name)
	outPath := filepath.Join(dir, name+".bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", outPath, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: %w\n%s", name, err, out)
	}
	return os.ReadFile(outPath)
}
