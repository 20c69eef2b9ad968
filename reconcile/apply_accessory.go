package reconcile

import (
	"context"
	"fmt"

	"github.com/capstan-dev/capstan/reconcile/kamal"
)

// bootAllAccessories boots the accessories before the app (hosts with one
// to boot, in parallel): an app may need them when it starts. A host
// whose accessory failed is failed.
func (r *applyRun) bootAllAccessories(ctx context.Context) {
	acc := r.hostsWith(StepBootAccessory, StepRebootAccessory)
	r.forEachHost(ctx, names(acc), func(ctx context.Context, i int, host string) {
		if err := r.bootAccessories(ctx, acc[i]); err != nil {
			r.fail(host, err)
		}
	})
}

// bootAccessories boots or reboots the accessories of a host.
func (r *applyRun) bootAccessories(ctx context.Context, hp *HostPlan) error {
	if err := r.ensureNetwork(ctx, hp); err != nil {
		return err
	}
	if err := r.login(ctx, hp); err != nil {
		return err
	}
	for _, s := range hp.Steps {
		if s.Kind != StepBootAccessory && s.Kind != StepRebootAccessory {
			continue
		}
		sr := &StepResult{Step: s, Start: r.a.now()}
		err := r.bootAccessory(ctx, hp, s)
		sr.End = r.a.now()
		if err != nil {
			sr.Error = err.Error()
		}
		r.record(hp.Host, sr)
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *applyRun) bootAccessory(ctx context.Context, hp *HostPlan, s Step) error {
	a := r.a
	host, spec := hp.Host, s.spec
	if c := hp.observed.byName(spec.Name); c != nil {
		if s.Kind == StepBootAccessory {
			// It exists but is stopped: start it (its data stays).
			if _, err := a.SSH.Run(ctx, host, []string{"docker", "start", spec.Name}, nil); err != nil {
				return fmt.Errorf("%w: start accessory %s: %w", ErrHost, spec.Name, err)
			}
			r.audit(ctx, host, "", "Started "+s.Role+" accessory")
			return nil
		}
		if _, err := a.SSH.Run(ctx, host, []string{"sh", "-c", `docker stop "$1" >/dev/null && docker rm "$1" >/dev/null`, "sh", spec.Name}, nil); err != nil {
			return fmt.Errorf("%w: remove accessory %s: %w", ErrHost, spec.Name, err)
		}
	}
	if err := r.uploadRunFiles(ctx, hp, spec); err != nil {
		return err
	}
	if _, err := a.SSH.Run(ctx, host, spec.Run.Expand(hp.observed.Home), nil); err != nil {
		return fmt.Errorf("%w: docker run accessory %s: %w", ErrHost, spec.Name, err)
	}
	r.audit(ctx, host, "", "Booted "+s.Role+" accessory")
	return nil
}

// uploadRunFiles creates the container's directories and uploads its env
// file (0600).
func (r *applyRun) uploadRunFiles(ctx context.Context, hp *HostPlan, spec *kamal.Container) error {
	a := r.a
	if dirs := runDirs(spec); len(dirs) > 0 {
		argv := append([]string{"mkdir", "-p", "--"}, kamal.ExpandHome(dirs, hp.observed.Home)...)
		if _, err := a.SSH.Run(ctx, hp.Host, argv, nil); err != nil {
			return fmt.Errorf("%w: mkdir for %s: %w", ErrHost, spec.Name, err)
		}
	}
	if spec.EnvFile.Path != "" {
		if err := a.SSH.Upload(ctx, hp.Host, spec.EnvFile.Path, 0o600, []byte(spec.EnvFile.Content.Reveal())); err != nil {
			return fmt.Errorf("%w: upload env file %s: %w", ErrHost, spec.EnvFile.Path, err)
		}
	}
	return nil
}
