package proxy

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

func TestRoute_Name(t *testing.T) {
	for _, c := range []struct {
		r    Route
		want string
	}{
		{Route{Service: "testapp", Role: "web"}, "testapp-web"},
		{Route{Service: "shop", Role: "api", Destination: "production"}, "shop-api-production"},
	} {
		if got := c.r.Name(); got != c.want {
			t.Errorf("%+v: Name() = %q, want %q", c.r, got, c.want)
		}
	}
}

func TestRoute_Validate(t *testing.T) {
	ok := []Route{
		{Service: "testapp", Role: "web"},
		{Service: "shop", Role: "web", Destination: "staging", Options: Options{
			Hosts: []string{"shop.example.com", "*.tenants.example.com"}, TLS: true,
			PathPrefixes: []string{"/api"}, HealthCheck: HealthCheck{Path: "/health/ready"},
			LogRequestHeaders: []string{"X-Request-Start"},
		}},
	}
	for _, r := range ok {
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", r.Name(), err)
		}
	}
	bad := map[string]Route{
		"empty service":     {Role: "web"},
		"quote in role":     {Service: "a", Role: `web"`},
		"space in dest":     {Service: "a", Role: "web", Destination: "pro duction"},
		"dash first":        {Service: "-a", Role: "web"},
		"host with space":   {Service: "a", Role: "web", Options: Options{Hosts: []string{"a.com b.com"}}},
		"host with port":    {Service: "a", Role: "web", Options: Options{Hosts: []string{"a.com:80"}}},
		"relative path":     {Service: "a", Role: "web", Options: Options{PathPrefixes: []string{"api"}}},
		"tls without host":  {Service: "a", Role: "web", Options: Options{TLS: true}},
		"health check path": {Service: "a", Role: "web", Options: Options{HealthCheck: HealthCheck{Path: "up"}}},
		"header with colon": {Service: "a", Role: "web", Options: Options{LogResponseHeaders: []string{"X-A:"}}},
		"negative interval": {Service: "a", Role: "web", Options: Options{HealthCheck: HealthCheck{Interval: -time.Second}}},
	}
	for name, r := range bad {
		if err := r.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestTarget_Validate(t *testing.T) {
	if err := (Target{Container: "2a271781744a", Port: 3000}).Validate(); err != nil {
		t.Error(err)
	}
	for _, tg := range []Target{{}, {Container: "a b", Port: 80}, {Container: "abc", Port: 70000}, {Container: "abc:80", Port: 80}} {
		if err := tg.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: err = %v, want ErrInvalid", tg, err)
		}
	}
	if !(Target{}).IsZero() || (Target{Port: 1}).IsZero() {
		t.Error("IsZero")
	}
	if got := (Target{Container: "abc", Port: 3000}).String(); got != "abc:3000" {
		t.Errorf("String() = %q", got)
	}
}

func TestOptions_WithDefaults(t *testing.T) {
	o := Options{HealthCheck: HealthCheck{Path: "/health"}, DrainTimeout: 5 * time.Second}.WithDefaults()
	if o.DeployTimeout != 30*time.Second || o.DrainTimeout != 5*time.Second || o.HealthCheck.Path != "/health" ||
		o.HealthCheck.Interval != time.Second || o.HealthCheck.Timeout != 5*time.Second {
		t.Errorf("WithDefaults() = %+v", o)
	}
}

type hangingRunner struct{}

func (hangingRunner) Run(ctx context.Context, _ string, _ []string, _ io.Reader) ([]byte, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(10 * time.Second):
		return nil, errors.New("not cancelled")
	}
}

func TestRunWithTimeout(t *testing.T) {
	start := time.Now()
	_, err := RunWithTimeout(context.Background(), hangingRunner{}, 50*time.Millisecond, "h", []string{"sleep", "100"}, nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("err = %v after %s", err, time.Since(start))
	}
}
