package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// DefaultPrepullMinFree is the free space a pre-pull leaves in a host's
// Docker data root when PrepullOptions.MinFree is 0.
const DefaultPrepullMinFree = 1 << 30

// The outcomes of a pre-pull on one host (PrepullHost.Outcome).
const (
	PrepullPulled  = "pulled"  // the image was pulled
	PrepullPresent = "present" // the host had it already
	PrepullSkipped = "skipped" // not pulled: too little free space (Reason says)
	PrepullFailed  = "failed"  // the host or the pull failed (Reason says)
)

// PrepullOptions bound a pre-pull. The zero value evicts nothing, keeps
// DefaultPrepullMinFree free and does not know the image's size.
type PrepullOptions struct {
	// Evict are older versions pre-pulled before and not deployed, to
	// remove from each host (their images only, and only when no container
	// uses them) before pulling: the caller keeps at most N (default 2)
	// not-yet-deployed versions per app. The version pre-pulled and the
	// App's own version are never evicted.
	Evict []string
	// MinFree is the free space (bytes) the Docker data root must keep
	// after the pull (0: DefaultPrepullMinFree). ImageSize, when known
	// (the sum of the manifest's layer sizes), is what the pull needs on
	// top; 0 checks MinFree alone.
	MinFree, ImageSize int64
	// Digest, when known (the registry's digest of the tag), makes a host
	// whose image under that tag has another digest pull it again, as the
	// deploy's pull does with App.ImageDigest.
	Digest string
}

// PrepullHost is what a pre-pull did on one host.
type PrepullHost struct {
	Host string
	// Outcome is PrepullPulled, PrepullPresent, PrepullSkipped or
	// PrepullFailed.
	Outcome string
	// Reason explains a skipped or failed host, secrets masked (App.Redact).
	Reason string
	// Evicted are the versions whose image was removed from the host.
	Evicted []string
	Took    time.Duration
}

// ErrPrepull marks a pre-pull that could not be attempted at all (an
// invalid version, no host runs a role of the app).
var ErrPrepull = errors.New("pre-pull not attempted")

// Prepull pulls the image of version (the app's image repository with that
// tag; version may also be a sha256: digest, as x-capstan.version allows)
// on every host that runs a role of the app (not accessory-only hosts), in
// parallel (App.Parallel), without touching any container, the proxy, the
// lock or the audit log: a pre-pull changes nothing Kamal sees but an
// extra image. On each host it first removes the images of opt.Evict that
// no container uses, then, unless the host has the image already, checks
// the free space of the Docker data root and skips the host with the
// reason when it is short; else it logs in to the registry as the deploy's
// pull does (password on stdin) and pulls. An image without the app's
// service label fails its host (a permanent reason). A host that fails
// (unreachable, pull failed) does not hold back the others.
//
// It returns one PrepullHost per host, in the App's order; the error,
// wrapping ErrPrepull (and kamal.ErrVersion for a version that is neither
// a tag nor a digest), comes back only when nothing could be attempted.
func (a *App) Prepull(ctx context.Context, version string, opt PrepullOptions) ([]PrepullHost, error) {
	if a.Config == nil {
		return nil, fmt.Errorf("%w: App without config", ErrPrepull)
	}
	ref, err := a.prepullRef(version)
	if err != nil {
		return nil, err
	}
	evict, err := a.evictRefs(version, opt.Evict)
	if err != nil {
		return nil, err
	}
	hosts := a.roleHosts()
	if len(hosts) == 0 {
		return nil, fmt.Errorf("%w: no host runs a role of %s", ErrPrepull, a.Config.Service)
	}
	minFree := opt.MinFree
	if minFree <= 0 {
		minFree = DefaultPrepullMinFree
	}
	needKiB := (max(opt.ImageSize, 0) + minFree + 1023) >> 10
	// A pre-pull runs as an apply without steps: the same pull, the same
	// Docker API rules and redaction; nothing records or audits.
	r := newApplyRun(a, &Plan{Service: a.Config.Service, Version: version, Image: ref})
	r.log = r.log.With("prepull", true)
	out := make([]PrepullHost, len(hosts))
	a.forEachHost(ctx, hosts, func(ctx context.Context, i int, host string) {
		ctx, cancel := context.WithTimeout(ctx, pullTimeout)
		defer cancel()
		start := a.now()
		out[i] = r.prepullHost(ctx, host, ref, opt.Digest, evict, needKiB, needs(opt.ImageSize, minFree))
		out[i].Took = a.now().Sub(start)
	})
	for i := range out {
		if out[i].Host == "" { // ctx ended before the host's turn
			out[i] = PrepullHost{Host: hosts[i], Outcome: PrepullFailed, Reason: ctx.Err().Error()}
		}
	}
	return out, nil
}

// needs says what a pull needed, for a skipped host's reason.
func needs(imageSize, minFree int64) string {
	if imageSize > 0 {
		return fmt.Sprintf("the image needs %s + %s kept free", formatSize(imageSize), formatSize(minFree))
	}
	return fmt.Sprintf("%s must be kept free", formatSize(minFree))
}

// prepullRef is the image reference of version, which must be a Docker
// tag or a sha256 digest (it comes from a webhook or the API).
func (a *App) prepullRef(version string) (string, error) {
	if !kamal.ValidVersion(version) {
		return "", fmt.Errorf("%w: %w: %q is neither an image tag nor a sha256:<64 hex> digest", ErrPrepull, kamal.ErrVersion, version)
	}
	return a.Config.ImageAt(kamal.Version{Value: version}), nil
}

// evictRefs maps the versions to evict to image references, leaving out
// the version pre-pulled, the App's own and repeats.
func (a *App) evictRefs(version string, evict []string) (map[string]string, error) {
	refs := map[string]string{}
	for _, v := range evict {
		ref, err := a.prepullRef(v)
		if err != nil {
			return nil, fmt.Errorf("evict: %w", err)
		}
		if v != version && v != a.Config.Version.Value {
			refs[ref] = v
		}
	}
	return refs, nil
}

// roleHosts are the hosts that run an app container, in the App's order.
func (a *App) roleHosts() []string {
	var hosts []string
	for _, hp := range a.Hosts {
		if len(hp.Apps) > 0 && !slices.Contains(hosts, hp.Host) {
			hosts = append(hosts, hp.Host)
		}
	}
	return hosts
}

// prepullHost evicts, then pulls ref on host (pullImage, with needKiB
// free checked; need says what it is for a skipped host's reason).
func (r *applyRun) prepullHost(ctx context.Context, host, ref, digest string, evict map[string]string, needKiB int64, need string) PrepullHost {
	res := PrepullHost{Host: host}
	fail := func(err error) PrepullHost {
		res.Outcome, res.Reason = PrepullFailed, r.redact(err.Error())
		return res
	}
	if len(evict) > 0 {
		evicted, err := r.evict(ctx, host, evict)
		res.Evicted = evicted
		if err != nil {
			return fail(fmt.Errorf("evict on %s: %w", host, err))
		}
	}
	how, err := r.pullImage(ctx, host, ref, digest, needKiB, true)
	var se *spaceError
	switch {
	case errors.As(err, &se):
		res.Outcome = PrepullSkipped
		res.Reason = fmt.Sprintf("only %s free in %s, %s", formatSize(se.FreeKiB<<10), se.Dir, need)
	case err != nil:
		return fail(fmt.Errorf("pull on %s: %w", host, err))
	default:
		res.Outcome = how
	}
	return res
}

// evictScript, run with argv image…, removes each image that exists and
// that no container (running or not) was created from, and prints the
// reference of each it removed. An image it cannot remove is left.
const evictScript = `for img do
  docker image inspect "$img" >/dev/null 2>&1 || continue
  used=$(docker ps -aq --filter "ancestor=$img") || continue
  [ -z "$used" ] || continue
  docker image rm "$img" >/dev/null && echo "$img"
done
exit 0`

// evict removes the images of evict (reference -> version) that no
// container uses from host, in one round trip, and returns the versions
// removed, sorted.
func (r *applyRun) evict(ctx context.Context, host string, evict map[string]string) ([]string, error) {
	refs := make([]string, 0, len(evict))
	for ref := range evict {
		refs = append(refs, ref)
	}
	slices.Sort(refs)
	out, err := r.a.SSH.Run(ctx, host, append([]string{"sh", "-c", evictScript, "sh"}, refs...), nil)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := evict[strings.TrimSpace(line)]; ok {
			removed = append(removed, v)
		}
	}
	slices.Sort(removed)
	return removed, nil
}
