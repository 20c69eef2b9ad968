package reconcile

import (
	"context"
	"fmt"
	"slices"

	"github.com/capstan-dev/capstan/internal/failpoint"
)

// tagAndPrune is the last step, once every booted host runs the version:
// on each host that deployed it, move the latest tag; then, on every host
// with such steps, stop stale and unmanaged containers, and prune.
func (r *applyRun) tagAndPrune(ctx context.Context) {
	finish := r.hostsWith(StepDeploy, StepStopStale, StepStopUnmanaged, StepPrune)
	r.forEachHost(ctx, names(finish), func(ctx context.Context, i int, host string) {
		if err := r.finishHost(ctx, finish[i]); err != nil {
			r.fail(host, err)
		}
	})
}

// finishHost tags the latest image on hp if it deployed the version, then
// runs its cleanup steps.
func (r *applyRun) finishHost(ctx context.Context, hp *HostPlan) error {
	a := r.a
	if slices.ContainsFunc(hp.Steps, func(s Step) bool { return s.Kind == StepDeploy }) {
		if err := r.tagLatest(ctx, hp.Host); err != nil {
			return fmt.Errorf("%w: tag latest: %w", ErrHost, err)
		}
		r.audit(ctx, hp.Host, "", fmt.Sprintf("Tagging %s as the latest image", a.Config.Image()))
	}
	return r.cleanup(ctx, hp)
}

// cleanup stops stale and unmanaged containers and prunes old ones.
func (r *applyRun) cleanup(ctx context.Context, hp *HostPlan) error {
	a := r.a
	for _, s := range hp.Steps {
		var err error
		sr := &StepResult{Step: s, Start: a.now()}
		switch s.Kind {
		case StepStopStale, StepStopUnmanaged:
			_, err = a.SSH.Run(ctx, hp.Host, []string{"docker", "stop", s.Container}, nil)
		case StepPrune:
			for i, c := range s.Remove {
				if err = r.removeContainer(ctx, hp.Host, c); err != nil {
					break
				}
				if i == 0 {
					failpoint.Hit(FailDuringPrune)
				}
			}
		default:
			continue
		}
		sr.End = a.now()
		if err != nil {
			sr.Error = err.Error()
		}
		r.record(hp.Host, sr)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrHost, s, err)
		}
		if s.Kind == StepPrune {
			r.audit(ctx, hp.Host, "", "Pruned containers")
		}
	}
	return nil
}
