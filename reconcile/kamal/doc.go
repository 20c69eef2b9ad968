// Package kamal reads a stock Kamal 2 configuration (config/deploy.yml,
// an optional destination file config/deploy.D.yml and the .kamal/secrets
// files) and turns it into the desired state of every host: the exact
// docker run argv Kamal would use for each role container and accessory,
// the env files with their secret content, the kamal-proxy boot and deploy
// commands, and a keyed spec fingerprint stored as a container label.
//
// The package is pure: it reads only the fs.FS it is given, takes the
// environment and the operator's secrets as inputs, never logs, never uses
// the network and never runs anything on its own (the optional
// LoadOptions.RunCommand is the caller's).
//
// # Loading
//
// Load mirrors Kamal 2.12 (lib/kamal/configuration.rb):
//
//  1. Each file is rendered with a safe ERB subset (see erb.go: ENV,
//     string and list expressions, if/unless/each, File.read inside the
//     repository, the revision and its commit time for a few git and date
//     commands that are answered, never run; anything else is an ErrUnsafe
//     error, and the file is still checked with the failed tags rendered
//     as "") and parsed as YAML with anchors, aliases and "<<" merge keys. Files over MaxFileSize and alias expansions over a
//     node budget are refused (ErrTooLarge).
//  2. The destination file is deep-merged over the base: maps merge, lists
//     and scalars replace.
//  3. The merged tree is checked against Kamal's schema: unknown keys are
//     rejected (top-level "x-" keys excepted), strings accept any scalar,
//     integers and booleans are strict. Then Kamal's cross-field rules.
//  4. Secrets referenced by the configuration are looked up in
//     .kamal/secrets-common and .kamal/secrets (or .kamal/secrets.D with a
//     destination), parsed with the rules of Ruby dotenv 3.2 and Kamal's
//     command substitution (dotenv.go); $VAR comes from earlier keys, then
//     KAMAL_DESTINATION, LoadOptions.SecretsEnv and LookupEnv. $(command)
//     is refused unless LoadOptions.RunCommand is set; independent
//     commands run concurrently. LoadOptions.SkipSecrets skips this step.
//  5. The version is LoadOptions.Version, else x-capstan.version in the
//     merged configuration, else LoadOptions.Revision (the git commit).
//
// Every problem is collected; Load returns them all as an Errors value
// whose lines read "FILE:LINE: key.path: message". Each *Error wraps one
// of the ErrX sentinels for errors.Is.
//
// # Desired state
//
// Config.Plan and Config.Plans return a HostPlan per host. Commands are
// argv (Command.Argv); Command.String prints them the way Kamal does, which
// is what the golden tests compare with Kamal's own output
// (testdata/transcript). Paths under the SSH user's login directory start
// with HomePrefix ("$PWD/"); Command.Expand resolves them in a command
// (and leaves every other argument alone), ExpandHome in a list of paths.
//
// Secret values live only in Secret values (and Config.SecretValues, for
// the redactor): they print, marshal and format as Redacted.
//
// # Differences from Kamal
//
//   - ERB is a small Ruby subset; Kamal runs arbitrary Ruby. Time.now and
//     `date` answer the commit time, `git describe` the short SHA unless
//     LoadOptions.RevisionDescribe is set, and a tag that fails on a YAML
//     comment line renders "" instead of failing the load.
//   - A secret whose value uses an unset $VAR, or a $(command) that failed
//     or was refused, is an error; dotenv would substitute "" (or the
//     command's partial output) and deploy it.
//   - cmd: strings are split into argv; shell syntax that Kamal would leave
//     to the host's shell (&&, |, $VAR, …) is rejected.
//   - A clear env value containing ${VAR} is passed literally; Kamal's
//     remote shell would expand it.
//   - The container hostname suffix is derived from host and container
//     name instead of being random.
//   - Accessory files ending in .erb are uploaded as they are (Kamal renders
//     them with the accessory env).
//   - A digest version "sha256:<hex>" runs REPO@sha256:<hex> in containers
//     named with "sha256-" plus the first 12 hex digits.
//   - Names and values are checked where Kamal checks only the service
//     name (names.go): a NUL byte anywhere, role, accessory and container
//     names outside Docker's alphabet, hosts with shell characters or a
//     leading "-", env, label and option names that Docker would split
//     elsewhere, and an image starting with "-" are refused at load.
//     Every other value reaches Docker byte for byte: a clear env value
//     with a line break keeps it (Kamal's double-quoted shell line would
//     make it a literal \n), and a volume or value holding $VAR is not
//     expanded (except a volume's leading $PWD/, the login directory).
//   - Accessory files must come from inside the repository (Kamal reads
//     any local path); their remote path, and a relative host directory,
//     may not leave the accessory's directory with "..". A repository file
//     that a symbolic link leads out of the checkout is refused (LoadDir).
//   - A container whose docker run line would not fit a remote command
//     line (MaxCommandLine) is refused at load; Kamal fails on the host.
package kamal
