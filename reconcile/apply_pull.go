package reconcile

import (
	"context"
	"fmt"
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

// pullScript, run with argv image, service-label format: inspect the
// image; if absent (or, with a known digest, not that digest) log in with
// the password on stdin when a user is given, pull, and inspect again. It
// prints "present" or "pulled" and then the inspect line.
const pullScript = `img=$1 fmt=$2 digest=$3 server=$4 user=$5
if out=$(docker image inspect --format "$fmt" "$img" 2>/dev/null) && { [ -z "$digest" ] || case $out in *"$digest"*) true;; *) false;; esac; }; then
  echo present; echo "$out"; exit 0
fi
if [ -n "$user" ]; then
  docker login "$server" -u "$user" --password-stdin >/dev/null || exit $?
else
  cat >/dev/null
fi
docker pull --quiet "$img" >/dev/null || exit $?
echo pulled
docker image inspect --format "$fmt" "$img"`

// pull makes sure host has the image in one round trip: skipped when it
// already has it (with the registry's digest, when known); else log in
// and pull. Then check the service label, as Kamal does.
func (r *applyRun) pull(ctx context.Context, host string) (string, error) {
	a := r.a
	img := a.Config.Image()
	labelled := func(how, label string) (string, error) {
		if label != a.Config.Service {
			return "", fmt.Errorf("%w: %w: image %s is missing the 'service' label (want %q, found %q)", ErrPull, ErrPermanent, img, a.Config.Service, label)
		}
		if how == "pulled" {
			r.audit(ctx, host, "", "Pulled image with version "+a.Config.Version.Name())
		}
		return how, nil
	}
	reg := a.Config.Registry
	user, server := "", reg.Server
	if reg.Username.Reveal() != "" && !reg.Local() {
		user = reg.Username.Reveal()
	}
	present, label, known := r.imagePresent(ctx, host)
	if known && present {
		return labelled("present", label)
	}
	// The API pulls only with credentials from deploy.yml: without them the
	// docker CLI may still use those in the host's ~/.docker/config.json.
	if known && user != "" {
		auth := registryAuth(server, user, reg.Password.Reveal())
		if handled, err := r.viaAPI(ctx, host, func(d *dockerAPI) error { return d.pull(ctx, host, img, auth) }); handled {
			if err != nil {
				return "", pullError(img, err)
			}
			if present, label, known := r.imagePresent(ctx, host); known && present {
				return labelled("pulled", label)
			}
		}
	}
	argv := []string{"sh", "-c", pullScript, "sh", img, `{{json .RepoDigests}}|{{index .Config.Labels "service"}}`, a.ImageDigest, server, user}
	out, err := a.SSH.Run(ctx, host, argv, strings.NewReader(reg.Password.Reveal()))
	if err != nil {
		return "", pullError(img, err)
	}
	how, info, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	_, label, _ = strings.Cut(strings.TrimSpace(info), "|")
	return labelled(how, label)
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
