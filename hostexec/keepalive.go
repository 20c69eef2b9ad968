package hostexec

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// link is one SSH connection of the Pool. It remembers why the Pool closed
// it, so that commands broken by the close can say so.
type link struct {
	*ssh.Client
	via  *link         // the jump host's connection this one runs over, or nil
	done chan struct{} // closed when the connection has ended

	mu    sync.Mutex
	cause error
}

// closeWith closes the connection; a non-nil cause becomes the reason
// reported by lost, unless an earlier one was recorded.
func (l *link) closeWith(cause error) {
	l.mu.Lock()
	if l.cause == nil {
		l.cause = cause
	}
	l.mu.Unlock()
	l.Close()
}

// lost returns the error for an operation broken by the end of l: the
// reason the Pool closed it or the jump host connection under it, if it
// did, else err.
func (l *link) lost(err error) error {
	l.mu.Lock()
	cause := l.cause
	l.mu.Unlock()
	switch {
	case cause != nil:
		return cause
	case l.via != nil:
		return l.via.lost(err)
	default:
		return err
	}
}

// keepalive sends keepalive@openssh.com requests on l every
// KeepaliveInterval, one at a time, until l ends. A request still
// unanswered KeepaliveMax ticks after it was sent closes l with an
// ErrUnreachable cause and drops it from c. The ticker decides, not the
// request: SendRequest blocks until an answer that a silent peer never
// sends. Closing the client ends the sessions and channels on it, so
// commands running there return at once.
func (p *Pool) keepalive(c *conn, l *link, h Host) {
	interval, maxMisses := p.cfg.KeepaliveInterval, p.cfg.KeepaliveMax
	t := time.NewTicker(interval)
	defer t.Stop()
	var reply chan error // non-nil while a request is outstanding
	misses := 0
	for {
		select {
		case <-l.done:
			return
		case err := <-reply:
			if err != nil { // the connection ended; the Wait goroutine drops it
				return
			}
			reply, misses = nil, 0
			continue
		case <-t.C:
		}
		if reply != nil {
			if misses++; misses >= maxMisses {
				cause := fmt.Errorf("%w: %s: keepalive unanswered for %v (%d × %v)",
					ErrUnreachable, h, time.Duration(misses)*interval, misses, interval)
				p.log.Debug("ssh keepalive lost, closing connection", "host", h.String(), "err", cause)
				c.drop(l, cause)
				return
			}
			continue
		}
		reply = make(chan error, 1)
		go func(reply chan<- error) {
			_, _, err := l.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}(reply)
	}
}

// ctxErr returns ctx.Err(), or the context's cause when that wraps it: the
// Pool's own timeouts (ConnectTimeout, CommandTimeout) say which one ran
// out.
func ctxErr(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); errors.Is(cause, err) {
		return cause
	}
	return err
}
