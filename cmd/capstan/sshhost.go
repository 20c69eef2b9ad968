package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"

	"github.com/capstan-dev/capstan/hostexec"
	"github.com/capstan-dev/capstan/reconcile"
)

// sshHosts adapts a hostexec.Pool to the interfaces reconcile and the proxy
// drivers declare: hosts are named as in deploy.yml, and a command's
// non-zero exit becomes a *reconcile.ExitError.
type sshHosts struct {
	pool *hostexec.Pool
}

func (s sshHosts) target(host string) hostexec.Host { return hostexec.Host{Addr: host} }

// Run implements reconcile.Runner and proxy.Runner.
func (s sshHosts) Run(ctx context.Context, host string, argv []string, stdin io.Reader) ([]byte, error) {
	res, err := s.pool.Run(ctx, s.target(host), argv, hostexec.RunOptions{Stdin: stdin})
	return res.Stdout, exitErr(host, err)
}

// Stream implements reconcile.Streamer: the command's stdout goes to w as
// it arrives; only ctx ends it.
func (s sshHosts) Stream(ctx context.Context, host string, argv []string, w io.Writer) error {
	return exitErr(host, s.pool.Stream(ctx, s.target(host), argv, w, nil, hostexec.RunOptions{}))
}

// Upload implements reconcile.Uploader.
func (s sshHosts) Upload(ctx context.Context, host, path string, mode fs.FileMode, content []byte) error {
	return exitErr(host, s.pool.Upload(ctx, s.target(host), path, mode, content))
}

// Dial implements reconcile.Dialer and proxy.Dialer.
func (s sshHosts) Dial(ctx context.Context, host, network, addr string) (net.Conn, error) {
	return s.pool.Dial(ctx, s.target(host), network, addr)
}

func exitErr(host string, err error) error {
	var ee *hostexec.ExitError
	if errors.As(err, &ee) {
		return &reconcile.ExitError{Host: host, Code: ee.Code, Stderr: string(ee.Stderr), Err: err}
	}
	return err
}
