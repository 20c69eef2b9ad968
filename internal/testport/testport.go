// Package testport gives tests a loopback port for a process they start
// (sshd, haproxy, a registry, the daemon), which binds it later.
//
// A port the kernel hands out for "127.0.0.1:0" comes from the ephemeral
// range (32768-60999 on Linux), where it may be taken again as the source
// port of some outgoing connection before the process binds it: in CI,
// haproxy failed with "Address already in use" that way. Free picks below
// that range, where no connection's source port lands.
package testport

import (
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
)

// Free returns a loopback TCP port nothing listens on now, between 20000
// and 31999.
func Free(t testing.TB) int {
	t.Helper()
	for range 200 {
		p := 20000 + rand.IntN(12000)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("testport: no free port between 20000 and 31999")
	return 0
}

// Addr is Free as "127.0.0.1:PORT".
func Addr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(Free(t))
}
