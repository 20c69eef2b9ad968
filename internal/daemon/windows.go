package daemon

import (
	"errors"
	"fmt"
	"time"

	"github.com/capstan-dev/capstan/reconcile"
	"github.com/capstan-dev/capstan/reconcile/window"
)

// checkWindows compiles an app's deploy windows, each error at its key.
func checkWindows(a *AppConfig, p string, bad func(keyPath, format string, args ...any)) {
	if len(a.Windows) == 0 {
		return
	}
	set, err := window.Compile(a.Windows)
	if err == nil {
		a.windows = set
		return
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var se *window.SpecError
		if errors.As(e, &se) {
			bad(fmt.Sprintf("%s.windows[%d].%s", p, se.Index, se.Key), "%s", se.Msg)
		} else {
			bad(p+".windows", "%v", e)
		}
	}
}

// windowState adapts an app's compiled windows to the loop.
func windowState(set *window.Set) func(time.Time) reconcile.WindowState {
	return func(t time.Time) reconcile.WindowState {
		st := set.At(t)
		return reconcile.WindowState{Open: st.Open, Reason: st.Reason, Until: st.Until}
	}
}
