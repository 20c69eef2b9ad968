package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Faults a test can put on a lab host, each undone by Reset.

// SetLink brings host i's link to the lab bridge up or down. Down drops
// its packets silently (no RST), as a cut cable or a dead switch port
// would.
func (l *Lab) SetLink(i int, up bool) error {
	if i < 0 || i >= len(l.Hosts) {
		return fmt.Errorf("lab: no host %d", i)
	}
	state := map[bool]string{true: "up", false: "down"}[up]
	_, err := runOut(context.Background(), "ip", "link", "set", "v"+hostName(i), state)
	return err
}

// StopDocker stops host i's dockerd (SIGTERM, as a host shutdown would;
// containers stop with it) and waits until it is gone.
func (l *Lab) StopDocker(i int) error {
	pidFile := filepath.Join(l.hostDir(i), "dockerd.pid")
	pid := readPID(pidFile)
	if pid <= 0 || !alive(pid) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	for deadline := time.Now().Add(30 * time.Second); alive(pid); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: dockerd on %s did not stop", hostName(i))
		}
	}
	return nil
}

// StartDocker starts host i's dockerd unless it runs, and waits until it
// answers; containers with a restart policy come back, as after a reboot.
func (l *Lab) StartDocker(i int) error {
	hd := l.hostDir(i)
	if !pidAlive(filepath.Join(hd, "dockerd.pid")) {
		_ = os.Remove(filepath.Join(hd, "run", "docker.pid")) // left by a kill
		if err := l.spawn(i, "dockerd", filepath.Join(hd, "dockerd.log"), "dockerd"); err != nil {
			return err
		}
	}
	return waitDocker(context.Background(), l.DockerSocket(i), 30*time.Second)
}

// CommandLog is the file, in the root namespace, where host i's sshd
// appends every command line a client ran (for the secrets audit).
func (l *Lab) CommandLog(i int) string {
	return filepath.Join(l.hostDir(i), "run", "capstan-lab-commands.log")
}
