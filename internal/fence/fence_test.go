package fence

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestCheck(t *testing.T) {
	if err := Check(context.Background()); err != nil {
		t.Fatalf("no check: %v", err)
	}
	lost := false
	ctx := With(context.Background(), func() error {
		if lost {
			return fmt.Errorf("app web: %w", ErrLost)
		}
		return nil
	})
	derived, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	if err := Check(derived); err != nil {
		t.Fatalf("held: %v", err)
	}
	lost = true
	if err := Check(derived); !errors.Is(err, ErrLost) {
		t.Fatalf("lost: %v, want ErrLost through derived contexts", err)
	}
}
