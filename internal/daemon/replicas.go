package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstan-dev/capstan/internal/fence"
	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/state"
)

// This file is how several replicas of capstan serve share one PostgreSQL
// store. Each app is reconciled by one replica at a time: the one holding
// its lease. A replica renews its leases every ttl/5, takes free or
// expired ones up to its fair share (apps ÷ live replicas), gives back an
// idle app when it holds more than its share, and hands requests for an
// app it does not hold to the holder through the store.
//
// Fencing: a lease's local deadline is the time its last renewal was sent
// plus the TTL, less a margin. The database set the lease's expiry from
// its own clock when it got that renewal, so the deadline passes before
// any other replica can take the app. Every host action of the app asks
// the deadline first (internal/fence), and every write goes through a
// store view that checks the lease inside its transaction.

// tenure is this replica's hold on one app.
type tenure struct {
	lease    atomic.Pointer[state.Lease]
	deadline atomic.Int64 // ns since cluster.base: no host action after it
	store    *state.Store // writes fenced by the lease
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{} // closed when the app's loop returned
}

// cluster runs the replica protocol for a daemon on PostgreSQL.
type cluster struct {
	d      *Daemon
	id     string
	ttl    time.Duration
	margin time.Duration
	base   time.Time // monotonic origin of deadlines

	mu   sync.Mutex
	held map[string]*tenure
	// last is each app's latest tenure here, held or ended: a new one
	// runs the app's loop only once the last one's loop returned.
	last map[string]*tenure
}

func newCluster(d *Daemon) (*cluster, error) {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	ttl := time.Duration(d.cfg.State.LeaseTTL)
	return &cluster{d: d, id: strings.Trim(host+"-"+hex.EncodeToString(b), "-"), ttl: ttl, margin: ttl / 5,
		base: time.Now(), held: map[string]*tenure{}, last: map[string]*tenure{}}, nil
}

// tick is how often leases are renewed and free apps sought.
func (c *cluster) tick() time.Duration { return c.ttl / 5 }

// handoffPoll is how often the holder looks for requests handed to it.
const handoffPoll = 500 * time.Millisecond

// check is the fence of t: nil until its deadline.
func (c *cluster) check(app string, t *tenure) func() error {
	return func() error {
		if time.Since(c.base).Nanoseconds() >= t.deadline.Load() {
			return fmt.Errorf("app %s: %w", app, fence.ErrLost)
		}
		return nil
	}
}

// run takes part in the replica group until ctx ends, then stops the
// loops it runs (their in-flight host steps finish while the leases are
// still renewed) and gives their leases back.
func (c *cluster) run(ctx context.Context) {
	log := c.d.log.With("replica", c.id)
	log.Info("replica joining", "apps", len(c.d.order), "lease_ttl", c.ttl)
	t := time.NewTicker(c.tick())
	defer t.Stop()
	h := time.NewTicker(handoffPoll)
	defer h.Stop()
	// Announce this replica and wait one tick before taking apps, so that
	// replicas starting together count each other and share the apps
	// from the start.
	if err := c.d.store.Heartbeat(ctx, c.id, c.d.cfg.Listen); err != nil {
		log.Warn("heartbeat", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			c.leave(log)
			return
		case <-t.C:
			c.round(ctx)
		case <-h.C:
			c.claimHandoffs(ctx)
		}
	}
}

// round is one turn of the protocol: heartbeat, renew, drop what lapsed,
// rebalance.
func (c *cluster) round(ctx context.Context) {
	log := c.d.log.With("replica", c.id)
	st := c.d.store
	if err := st.Heartbeat(ctx, c.id, c.d.cfg.Listen); err != nil {
		log.Warn("heartbeat", "err", err)
	}
	c.renew(ctx)
	// A replica is live while it heartbeats (every tick); one silent for
	// a TTL is gone, and so are its leases by then.
	live, err := st.Replicas(ctx, c.ttl)
	if err != nil {
		return // the store is unreachable: take nothing new
	}
	fair := (len(c.d.order) + max(len(live), 1) - 1) / max(len(live), 1)
	held := c.heldApps()
	for _, app := range c.preference() {
		if len(held) >= fair {
			break
		}
		if slices.Contains(held, app) {
			continue
		}
		sent := time.Now()
		l, ok, err := st.AcquireLease(ctx, app, c.id, c.ttl)
		if err != nil || !ok {
			continue
		}
		c.start(ctx, app, l, sent, time.Duration(len(held))*startGap)
		held = append(held, app)
	}
	if len(held) > fair {
		c.giveBackIdle(ctx, held)
	}
}

// preference orders the apps for this replica (rendezvous hashing), so
// replicas starting together reach for different apps.
func (c *cluster) preference() []string {
	apps := slices.Clone(c.d.order)
	score := func(app string) uint64 {
		h := fnv.New64a()
		h.Write([]byte(c.id + "\x00" + app))
		return h.Sum64()
	}
	slices.SortFunc(apps, func(a, b string) int {
		sa, sb := score(a), score(b)
		switch {
		case sa < sb:
			return -1
		case sa > sb:
			return 1
		}
		return 0
	})
	return apps
}

func (c *cluster) heldApps() []string {
	var out []string
	for app := range c.tenures() {
		out = append(out, app)
	}
	return out
}

// tenures is a snapshot of the apps held, by name.
func (c *cluster) tenures() map[string]*tenure {
	c.mu.Lock()
	defer c.mu.Unlock()
	held := make(map[string]*tenure, len(c.held))
	for app, t := range c.held {
		held[app] = t
	}
	return held
}

// renew extends every lease held; one lost, or past its deadline without
// a renewal, stops its app at once.
func (c *cluster) renew(ctx context.Context) {
	held := c.tenures()
	for app, t := range held {
		sent := time.Now()
		l, err := c.d.store.RenewLease(ctx, *t.lease.Load(), c.ttl)
		switch {
		case err == nil:
			t.lease.Store(&l)
			t.deadline.Store(c.deadlineFrom(sent))
		case errors.Is(err, state.ErrLeaseLost):
			c.stop(app, t, "lease taken over")
		case c.check(app, t)() != nil:
			c.stop(app, t, "lease not renewed in time: "+err.Error())
		}
	}
}

// deadlineFrom is the local deadline of a lease renewed (or taken) by a
// request sent at sent.
func (c *cluster) deadlineFrom(sent time.Time) int64 {
	return sent.Add(c.ttl - c.margin).Sub(c.base).Nanoseconds()
}

// start runs app's loop under lease l, taken by a request sent at sent.
// The passes a dead holder left running are marked interrupted first.
func (c *cluster) start(parent context.Context, app string, l state.Lease, sent time.Time, after time.Duration) {
	r := c.d.apps[app]
	t := &tenure{store: c.d.store.Fenced(l), done: make(chan struct{})}
	t.lease.Store(&l)
	t.deadline.Store(c.deadlineFrom(sent))
	// The loop's context outlives parent: on shutdown the loop is
	// stopped first and the lease renewed until its steps finished.
	t.ctx, t.cancel = context.WithCancel(fence.With(context.WithoutCancel(parent), c.check(app, t)))
	c.mu.Lock()
	c.held[app] = t
	prev := c.last[app]
	c.last[app] = t
	c.mu.Unlock()
	r.ten.Store(t)
	if abandoned, err := t.store.AbandonRunningApp(t.ctx, app); err == nil && len(abandoned) > 0 {
		c.d.alertInterrupted(abandoned)
	}
	c.d.log.Info("app taken", "replica", c.id, "app", app, "token", l.Token)
	go func() {
		defer close(t.done)
		if prev != nil {
			<-prev.done // one Run of the loop at a time
		}
		r.runAfter(t.ctx, after)
	}()
}

// stop ends app's loop (its host actions are fenced already when the
// lease lapsed) and forgets the tenure.
func (c *cluster) stop(app string, t *tenure, why string) {
	c.mu.Lock()
	if c.held[app] != t {
		c.mu.Unlock()
		return
	}
	delete(c.held, app)
	c.mu.Unlock()
	c.d.apps[app].ten.CompareAndSwap(t, nil)
	t.cancel()
	c.d.log.Warn("app given up", "replica", c.id, "app", app, "why", why)
}

// giveBackIdle returns one app not in a pass to the group, for a replica
// that joined later to take.
func (c *cluster) giveBackIdle(ctx context.Context, held []string) {
	for _, app := range held {
		r := c.d.apps[app]
		if r.loop.Status().Running {
			continue
		}
		c.mu.Lock()
		t := c.held[app]
		c.mu.Unlock()
		if t == nil {
			continue
		}
		c.stop(app, t, "rebalancing to a replica with fewer apps")
		// Released once its loop returned (not renewed meanwhile: a slow
		// stop lets the lease expire instead, and its actions are fenced).
		go func() {
			<-t.done
			if err := c.d.store.ReleaseLease(context.WithoutCancel(ctx), *t.lease.Load()); err != nil {
				c.d.log.Warn("release lease", "app", app, "err", err)
			}
		}()
		return
	}
}

// leave stops every loop, renewing the leases while their in-flight host
// steps finish, then releases them so other replicas take the apps at
// once.
func (c *cluster) leave(log interface{ Info(string, ...any) }) {
	held := c.tenures()
	for _, t := range held {
		t.cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t := time.NewTicker(c.tick())
	defer t.Stop()
	for app, ten := range held {
		for waiting := true; waiting; {
			select {
			case <-ten.done:
				waiting = false
			case <-t.C:
				c.renew(ctx)
			case <-ctx.Done():
				waiting = false
			}
		}
		_ = c.d.store.ReleaseLease(ctx, *ten.lease.Load())
		c.d.apps[app].ten.Store(nil)
	}
	log.Info("replica left; leases released", "apps", len(held))
}

// claimHandoffs passes the requests other replicas handed over to the
// loops of the apps held here.
func (c *cluster) claimHandoffs(ctx context.Context) {
	held := c.tenures()
	for app, t := range held {
		hs, err := t.store.ClaimHandoffs(ctx, app)
		if err != nil {
			continue
		}
		for _, h := range hs {
			c.d.deliver(c.d.apps[app], h)
		}
	}
}

// owners maps each app to the replica holding its lease, in one read of
// the store (nil without replicas; an app held by none is absent).
func (d *Daemon) owners(ctx context.Context) map[string]string {
	if d.cluster == nil {
		return nil
	}
	out := map[string]string{}
	leases, _ := d.store.Leases(ctx)
	for _, l := range leases {
		out[l.App] = l.Owner
	}
	return out
}

// handoffPrepull is the Kind of a handed-over pre-pull; the version
// follows it.
const handoffPrepull = "prepull:"

// here reports whether this process reconciles r: always without
// replicas, while it holds r's lease with them.
func (d *Daemon) here(r *appRunner) bool { return d.cluster == nil || r.ten.Load() != nil }

// request asks r's loop for a pass, here or, when another replica holds
// the app, through the store.
func (d *Daemon) request(r *appRunner, req reconcile.Request) {
	if d.here(r) {
		r.loop.Request(req)
		return
	}
	h := state.Handoff{App: r.cfg.Name, Kind: req.Kind, By: req.By, Force: req.Force, Override: req.Override, RerunJobs: req.RerunJobs}
	if err := d.store.EnqueueHandoff(d.ctx(), h); err != nil {
		d.log.Error("hand a request to the replica holding the app", "app", r.cfg.Name, "err", err)
	}
}

// prepull queues a pre-pull of version for r, here or on the holder.
func (d *Daemon) prepull(r *appRunner, version, why string) bool {
	if d.here(r) {
		return r.pre.queue(version, why)
	}
	h := state.Handoff{App: r.cfg.Name, Kind: handoffPrepull + version, By: why}
	if err := d.store.EnqueueHandoff(d.ctx(), h); err != nil {
		d.log.Error("hand a pre-pull to the replica holding the app", "app", r.cfg.Name, "err", err)
		return false
	}
	return true
}

// deliver acts on a request handed over by another replica.
func (d *Daemon) deliver(r *appRunner, h state.Handoff) {
	if v, ok := strings.CutPrefix(h.Kind, handoffPrepull); ok {
		r.pre.queue(v, h.By)
		return
	}
	r.loop.Request(reconcile.Request{Kind: h.Kind, By: h.By, Force: h.Force, Override: h.Override, RerunJobs: h.RerunJobs})
}
