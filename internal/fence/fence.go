// Package fence stops host actions that their owner may no longer take.
//
// A replica of capstan serve reconciles an app only while it holds the
// app's lease in the shared store. A replica that stalled (paused, cut off
// from the database) past its lease must not touch a host once another
// replica may have taken the app over: the daemon puts a check in the
// context of the app's loop with [With], and every SSH command, upload,
// channel and Docker API request asks [Check] first. The check is a local
// clock comparison, made just before the action goes out.
package fence

import (
	"context"
	"errors"
)

// ErrLost is what Check returns once the owner's claim has lapsed.
var ErrLost = errors.New("lease lost: this replica no longer owns the app")

type key struct{}

// With returns ctx carrying check. check returns nil while actions may go
// out, and an error wrapping ErrLost once they may not; it must be cheap
// and safe for concurrent use. Contexts derived from the result (including
// context.WithoutCancel) carry it too.
func With(ctx context.Context, check func() error) context.Context {
	return context.WithValue(ctx, key{}, check)
}

// Check asks ctx's check, if any: nil means go ahead.
func Check(ctx context.Context) error {
	if check, ok := ctx.Value(key{}).(func() error); ok {
		return check()
	}
	return nil
}
