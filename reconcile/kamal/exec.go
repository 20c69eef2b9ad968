package kamal

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
)

// ExecOptions describe a one-off container of a role's image, the one
// Kamal's `kamal app exec` (without --reuse) starts.
type ExecOptions struct {
	// Role is the role whose image, env, env file, logging, options and
	// the root volumes the container takes.
	Role string
	// Host is the host it runs on; it selects the env of the host's tags.
	// Kamal sets no KAMAL_HOST (nor any KAMAL_*) in an exec container.
	Host string
	// Cmd is the command after the image, as argv; nil runs the image's
	// default command.
	Cmd []string
	// Env are extra variables (`kamal app exec -e K=V`), after the role's.
	Env []KV
	// Interactive adds -it (docker run --interactive --tty).
	Interactive bool
	// Detach runs with --detach instead of --rm.
	Detach bool
	// Suffix is the <hex> of the name; "" picks 6 random hex digits as
	// Kamal does.
	Suffix string
}

// ExecRun returns the container name (S-R[-D]-exec-V-<hex>) and the
// docker run command of a one-off container, exactly as Kamal 2.12's
// execute_in_new_container builds it for the same configuration:
//
//	docker run [-it] --detach|--rm --name NAME --network kamal
//	[--env K="v"…] --env-file A/env/roles/R.env [--env K="v"… (o.Env)]
//	--log-opt max-size="10m" [--volume …] [--<opt> "<v>"…] IMAGE [cmd…]
//
// Unlike the role's boot there is no --hostname, no KAMAL_* env, no
// label, no asset volume and no restart policy. The env file is the
// role's (Container.EnvFile of the host's plan): the caller makes sure it
// exists on the host first. Run the command with Command.Expand. ExecRun
// returns an error for an unknown role or a host the role does not run
// on.
func (c *Config) ExecRun(o ExecOptions) (name string, run Command, err error) {
	r := c.Role(o.Role)
	if r == nil {
		return "", Command{}, fmt.Errorf("kamal: exec: no role %q", o.Role)
	}
	if !slices.Contains(r.Hosts, o.Host) {
		return "", Command{}, fmt.Errorf("kamal: exec: role %s does not run on %s", r.Name, o.Host)
	}
	suffix := o.Suffix
	if suffix == "" {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", Command{}, fmt.Errorf("kamal: exec: %w", err)
		}
		suffix = hex.EncodeToString(b[:])
	}
	name = c.Prefix(r) + "-exec-" + c.Version.Name() + "-" + suffix
	env := c.EnvFor(r, o.Host)
	b := newCmd("docker", "run")
	if o.Interactive {
		b.add(plain, "-it")
	}
	if o.Detach {
		b.add(plain, "--detach")
	} else {
		b.add(plain, "--rm")
	}
	b.add(plain, "--name", name, "--network", DefaultNetwork)
	roleEnvArgs(b, env, c.roleEnvPath(r))
	for _, kv := range o.Env {
		b.pair("--env", kv)
	}
	loggingArgs(b, r.Logging, true)
	c.volumeArgs(b)
	optionArgs(b, r.Options)
	b.add(plain, c.Image())
	b.add(shellWord, o.Cmd...)
	return name, b.build(), nil
}

// roleEnvFile is the env file of role r holding the secrets of env.
func (c *Config) roleEnvFile(r *Role, env EnvSpec) EnvFile {
	return EnvFile{Path: c.roleEnvPath(r), Mode: 0o600, Names: secretNames(env), Content: NewSecret(c.envFileContent(env))}
}

// roleEnvPath is where role r's env file lives on a host (Kamal's
// role.secrets_path), relative to the SSH user's home.
func (c *Config) roleEnvPath(r *Role) string { return c.AppDir() + "/env/roles/" + r.Name + ".env" }

// roleEnvArgs adds a role's clear env (--env K="v") and its env file, the
// shape of Kamal's role.env_args(host).
func roleEnvArgs(b *cmdBuilder, env EnvSpec, envFile string) {
	for _, kv := range env.Clear {
		b.pair("--env", kv)
	}
	b.add(plain, "--env-file", envFile)
}

// volumeArgs adds the root volumes (Kamal's config.volume_args).
func (c *Config) volumeArgs(b *cmdBuilder) {
	for _, v := range c.Volumes {
		b.volume(v)
	}
}
