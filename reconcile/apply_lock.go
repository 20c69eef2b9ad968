package reconcile

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"time"
)

// lockScript takes Kamal's lock directory $1 (exit 3 when it exists) and
// writes its details from stdin; a failed write releases it again.
const lockScript = `mkdir -p .kamal && { mkdir "$1" 2>/dev/null || { [ -d "$1" ] && exit 3; mkdir "$1"; }; } || exit
(umask 022 && cat > "$1/details") || { rc=$?; rm -rf -- "$1"; exit $rc; }`

// lock takes Kamal's deploy lock (atomic mkdir on the lock host), waiting
// up to LockTimeout for a lock someone else holds. The returned func
// releases it, even after ctx is cancelled.
func (r *applyRun) lock(ctx context.Context) (func(), error) {
	a := r.a
	host := a.LockHost()
	timeout := a.LockTimeout
	if timeout == 0 {
		timeout = DefaultLockTimeout
	}
	deadline := a.now().Add(timeout)
	dir := a.LockDir()
	msg := "Automatic deploy lock"
	if a.LockID != "" {
		msg += " (capstan " + a.LockID + ")"
	}
	details := fmt.Sprintf("Locked by: %s at %s\nVersion: %s\nMessage: %s", a.performer(), a.now().UTC().Format(time.RFC3339), a.Config.Version.Name(), msg)
	enc := base64.StdEncoding.EncodeToString([]byte(details)) + "\n"
	for {
		// Take it and write its details in one round trip; exit 3 means
		// someone holds it.
		_, err := a.SSH.Run(ctx, host, []string{"sh", "-c", lockScript, "sh", dir}, strings.NewReader(enc))
		if err == nil {
			break
		}
		if ExitCode(err) != 3 {
			return nil, fmt.Errorf("%w: lock on %s: %w", ErrHost, host, err)
		}
		holder, _ := a.SSH.Run(ctx, host, []string{"cat", dir + "/details"}, nil)
		held := strings.TrimSpace(string(holder))
		if b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(held, "\n", "")); err == nil {
			held = string(b)
		}
		if a.LockID != "" && strings.Contains(held, "(capstan "+a.LockID+")") {
			r.log.Warn("reclaiming a deploy lock left by an earlier run of this capstan", "host", host, "lock", firstLine(held))
			if _, err := a.SSH.Run(ctx, host, []string{"rm", "-r", "--", dir}, nil); err != nil {
				return nil, fmt.Errorf("%w: reclaim lock on %s: %w", ErrHost, host, err)
			}
			continue
		}
		if a.now().After(deadline) {
			return nil, fmt.Errorf("%w on %s (%s) after waiting %s: %s", ErrLocked, host, dir, timeout, strings.ReplaceAll(held, "\n", "; "))
		}
		r.lockWaited = true
		r.log.Info("deploy lock held, waiting", "host", host, "holder", strings.ReplaceAll(held, "\n", "; "))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := a.SSH.Run(cctx, host, []string{"rm", "-r", "--", dir}, nil); err != nil {
			r.log.Error("release deploy lock", "host", host, "err", err)
		}
	}, nil
}

// replan observes the hosts of the plan again, once the lock is held, and
// takes their fresh steps: what the lock's last holder already did is not
// done twice.
func (r *applyRun) replan(ctx context.Context) error {
	fresh, err := r.a.Plan(ctx)
	if err != nil {
		return err
	}
	byHost := map[string]*HostPlan{}
	for _, h := range fresh.Hosts {
		byHost[h.Host] = h
	}
	for i, hp := range r.plan.Hosts {
		if f := byHost[hp.Host]; hp.Error == "" && f != nil && f.Error == "" {
			r.plan.Hosts[i] = f
		}
	}
	steps := 0
	for _, hp := range r.plan.Hosts {
		steps += len(hp.Steps)
	}
	r.log.Info("re-planned after waiting for the deploy lock", "steps", steps)
	return nil
}

func (a *App) performer() string {
	if a.Performer != "" {
		return a.Performer
	}
	return "capstan"
}

// audit appends a Kamal-format line per message to the audit log on host,
// in one write; the lines go over stdin. It returns at once; the channel is
// closed once the write is done. Failures are logged, not fatal (Kamal's
// audit is best-effort too).
func (r *applyRun) audit(ctx context.Context, host, role string, msgs ...string) <-chan struct{} {
	done := make(chan struct{})
	r.auditWG.Add(1)
	go func() {
		defer r.auditWG.Done()
		defer close(done)
		r.a.writeAudit(context.WithoutCancel(ctx), host, role, msgs...)
	}()
	return done
}

// writeAudit appends a Kamal-format line per message to the audit log on
// host, in one write over stdin. A failure is logged, not returned
// (Kamal's audit is best-effort too).
func (a *App) writeAudit(ctx context.Context, host, role string, msgs ...string) {
	prefix := fmt.Sprintf("[%s] [%s]", a.now().UTC().Format(time.RFC3339), a.performer())
	if a.Config.Destination != "" {
		prefix += " [" + a.Config.Destination + "]"
	}
	if role != "" {
		prefix += " [" + role + "]"
	}
	var lines strings.Builder
	for _, msg := range msgs {
		lines.WriteString(prefix + " " + msg + "\n")
	}
	argv := []string{"sh", "-c", `mkdir -p .kamal && cat >> "$1"`, "sh", a.AuditLog()}
	if _, err := a.SSH.Run(ctx, host, argv, strings.NewReader(lines.String())); err != nil {
		a.log().Warn("audit log", "host", host, "err", err)
	}
}
