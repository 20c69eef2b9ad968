// Package hostexec runs commands on hosts over SSH. Every action capstan
// takes on a host goes through it.
//
// A [Pool] keeps one SSH connection per host (jump hosts included), opens
// one session per command on it, re-dials a connection that broke, and
// bounds concurrent dials across hosts (30, as Kamal). A dead host costs
// seconds and never blocks the others: each connection setup has its own
// deadline ([Config.ConnectTimeout], 10 s), each command may have one
// ([Config.CommandTimeout], [ErrTimeout]), and every connection sends a
// keepalive@openssh.com request every 5 s; one left unanswered for 3
// intervals closes the connection, which fails the commands running on it
// at once ([ErrUnreachable]) and makes the next call re-dial.
//
// Host keys are checked against OpenSSH known_hosts files as strictly as
// ssh(1) does: an unknown host fails with [ErrUnknownHost] unless the
// operator opted into accept-new, a changed key fails with
// [ErrHostKeyMismatch]; both name the host and the SHA256 fingerprint
// seen, and both are an [ErrHostKey], which is permanent: alert, do not
// retry. There is no way to skip the check.
//
// Commands are argv, never strings: [Quote] is the one function that turns
// argv into a remote shell command line. Secrets never go on a command
// line: [Pool.Run] refuses argv and Env values that contain a secret known
// to the Pool's redactor ([ErrSecretOnCommandLine]); secrets travel over
// stdin ([RunOptions.Stdin], [Pool.Upload]).
//
// [Pool.Interactive] runs a command on a remote terminal (a PTY sshd
// allocates, as `ssh -t`), for `capstan exec -i`: keystrokes in, the
// terminal's output out, window size changes forwarded.
//
// Every command is logged at debug level (host, redacted argv, duration,
// exit code) and counted per host ([Pool.Stats]).
//
// Typical use, from the composition root:
//
//	cfg := hostexec.Config{User: "deploy", Logger: log, Redactor: red}
//	cfg.FromEnv(os.Getenv)
//	pool, err := hostexec.New(cfg)
//	...
//	res, err := pool.Run(ctx, hostexec.Host{Addr: "10.0.0.5"}, []string{"docker", "ps", "-q"}, hostexec.RunOptions{})
//	var exit *hostexec.ExitError
//	if errors.As(err, &exit) { ... exit.Code, exit.Stderr ... }
package hostexec
