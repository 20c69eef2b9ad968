package reconcile

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// pullAndLock is the first step: pull on every host that boots the app
// before anything switches, and take the deploy lock meanwhile (Kamal
// pulls, then locks; doing both at once saves a round trip and changes
// nothing on the hosts). A failed pull fails its host; the lock's error
// comes back, else the func that releases the lock.
func (r *applyRun) pullAndLock(ctx context.Context) (unlock func(), lockErr error) {
	deployHosts := r.hostsWith(StepDeploy)
	lockDone := make(chan struct{})
	go func() {
		defer close(lockDone)
		unlock, lockErr = r.lock(ctx)
	}()
	r.pullOn(ctx, deployHosts)
	<-lockDone
	return unlock, lockErr
}

// pullOn pulls the image on hps in parallel and records a pull step for
// each; a host whose pull failed is failed.
func (r *applyRun) pullOn(ctx context.Context, hps []*HostPlan) {
	a := r.a
	r.forEachHost(ctx, names(hps), func(ctx context.Context, i int, host string) {
		start := a.now()
		pulled, err := r.pull(ctx, host)
		sr := &StepResult{Step: Step{Kind: StepPull, Host: host, Container: a.Config.Image(), Reason: pulled}, Start: start, End: a.now()}
		if err != nil {
			sr.Error = err.Error()
			r.fail(host, err)
		}
		r.record(host, sr)
	})
}

// pullScript, run with argv image, service-label format, digest, server,
// user and needKiB: inspect the image; if absent (or, with a known digest,
// not that digest) check, when needKiB is above 0, that the Docker data
// root has that many KiB free (else print "short" and the free KiB and the
// directory, and stop); log in with the password on stdin when a user is
// given, pull, and inspect again; with warm=1, create (never start) and
// remove a container of the image, so that the deploy's first create of a
// fresh image does not pay Docker's setup of its layers (0.8-3.5 s for a
// 315 MB image in the lab; 40 ms after). It prints "present" or "pulled"
// and then the inspect line.
const pullScript = `img=$1 fmt=$2 digest=$3 server=$4 user=$5 need=${6:-0} warm=${7:-0}
if out=$(docker image inspect --format "$fmt" "$img" 2>/dev/null) && { [ -z "$digest" ] || case $out in *"$digest"*) true;; *) false;; esac; }; then
  echo present; echo "$out"; exit 0
fi
if [ "$need" -gt 0 ]; then
  dir=$(docker info --format '{{.DockerRootDir}}') || exit $?
  free=$(df -Pk -- "$dir" | { read -r _; read -r _ _ _ avail _; echo "$avail"; })
  case $free in ''|*[!0-9]*) echo "cannot read the free space of $dir" >&2; exit 1;; esac
  if [ "$free" -lt "$need" ]; then echo short; echo "$free $dir"; exit 0; fi
fi
if [ -n "$user" ]; then
  docker login "$server" -u "$user" --password-stdin >/dev/null || exit $?
else
  cat >/dev/null
fi
docker pull --quiet "$img" >/dev/null || exit $?
if [ "$warm" = 1 ] && id=$(docker create --entrypoint /capstan-warm --label capstan.warm=1 "$img" 2>/dev/null); then
  docker rm "$id" >/dev/null 2>&1
fi
echo pulled
docker image inspect --format "$fmt" "$img"`

// pull makes sure host has the app's image (pullImage) and writes the
// audit line of a pull, as Kamal does.
func (r *applyRun) pull(ctx context.Context, host string) (string, error) {
	a := r.a
	how, err := r.pullImage(ctx, host, a.Config.Image(), a.ImageDigest, 0, false)
	if err == nil && how == "pulled" {
		r.audit(ctx, host, "", "Pulled image with version "+a.Config.Version.Name())
	}
	return how, err
}

// pullImage makes sure host has img in one round trip: "present" when it
// already has it (with digest, the registry's, when known); else, with
// needKiB above 0, a *spaceError when the Docker data root has less than
// that free; else log in and pull: "pulled" (and, with warm, readied for
// a fast first create: pullScript). Then check the service label, as
// Kamal does. It writes no audit line.
func (r *applyRun) pullImage(ctx context.Context, host, img, digest string, needKiB int64, warm bool) (string, error) {
	a := r.a
	labelled := func(how, label string) (string, error) {
		if label != a.Config.Service {
			return "", fmt.Errorf("%w: %w: image %s is missing the 'service' label (want %q, found %q)", ErrPull, ErrPermanent, img, a.Config.Service, label)
		}
		return how, nil
	}
	reg := a.Config.Registry
	user, server := "", reg.Server
	if reg.Username.Reveal() != "" && !reg.Local() {
		user = reg.Username.Reveal()
	}
	present, label, known := r.imagePresent(ctx, host, img, digest)
	if known && present {
		return labelled("present", label)
	}
	// The API pulls only with credentials from deploy.yml: without them the
	// docker CLI may still use those in the host's ~/.docker/config.json.
	// The free space is read by the script only.
	if known && user != "" && needKiB <= 0 && !warm {
		auth := registryAuth(server, user, reg.Password.Reveal())
		if handled, err := r.viaAPI(ctx, host, func(d *dockerAPI) error { return d.pull(ctx, host, img, auth) }); handled {
			if err != nil {
				return "", pullError(img, err)
			}
			if present, label, known := r.imagePresent(ctx, host, img, digest); known && present {
				return labelled("pulled", label)
			}
		}
	}
	warmArg := "0"
	if warm {
		warmArg = "1"
	}
	argv := []string{"sh", "-c", pullScript, "sh", img, `{{json .RepoDigests}}|{{index .Config.Labels "service"}}`, digest, server, user, strconv.FormatInt(max(needKiB, 0), 10), warmArg}
	out, err := a.SSH.Run(ctx, host, argv, strings.NewReader(reg.Password.Reveal()))
	if err != nil {
		return "", pullError(img, err)
	}
	how, info, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if how == "short" {
		return "", parseShort(img, info)
	}
	_, label, _ = strings.Cut(strings.TrimSpace(info), "|")
	return labelled(how, label)
}

// spaceError is a pull not attempted: the Docker data root Dir had only
// FreeKiB free, less than the pull was to leave.
type spaceError struct {
	Image   string
	Dir     string
	FreeKiB int64
}

func (e *spaceError) Error() string {
	return fmt.Sprintf("pull %s: only %s free in %s", e.Image, formatSize(e.FreeKiB<<10), e.Dir)
}

// parseShort reads the pull script's "FREE DIR" line after "short".
func parseShort(img, line string) error {
	free, dir, _ := strings.Cut(strings.TrimSpace(line), " ")
	n, err := strconv.ParseInt(free, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: pull %s: free space %q", ErrObserve, img, line)
	}
	return &spaceError{Image: img, Dir: dir, FreeKiB: n}
}

// formatSize renders n bytes in KiB below 1 MiB, in MiB below 1 GiB, else
// in GiB (one decimal unless whole).
func formatSize(n int64) string {
	switch {
	case n < 1<<20:
		return fmt.Sprintf("%d KiB", n>>10)
	case n < 1<<30:
		return fmt.Sprintf("%d MiB", n>>20)
	case n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// pullError wraps a failed pull in ErrPull. capstan found the tag in the
// registry before the hosts pulled it, so a failed pull is the registry or
// the host failing for now (connection dropped, 5xx, a layer cut short,
// the disk full) and the next poll retries it; an image built for another
// platform is permanent (ErrPermanent): no retry fixes it.
func pullError(img string, err error) error {
	if strings.Contains(err.Error(), "no matching manifest") {
		return fmt.Errorf("%w: %w: pull %s: %w", ErrPull, ErrPermanent, img, err)
	}
	return fmt.Errorf("%w: pull %s: %w", ErrPull, img, err)
}
