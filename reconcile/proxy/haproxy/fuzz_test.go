package haproxy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// FuzzAddServerCommand: whatever names and address come in, either the
// builder refuses with ErrInvalid, or the command has exactly the expected
// six words and nothing the runtime API parser treats specially.
func FuzzAddServerCommand(f *testing.F) {
	for _, s := range [][3]string{
		{"app-web", "app-web-v1", "172.18.0.5:3000"},
		{"app-web", `v1"`, "172.18.0.5:3000"},
		{"app web", "v1", "172.18.0.5:3000"},
		{"app-web", "v1;shutdown", "[fd00::1]:80"},
		{"app-web", "v1\nset", "127.0.0.1:1"},
		{"app-web", "v1", "[fe80::1%eth0]:80"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, backend, server, addr string) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return
		}
		cmd, err := addServerCommand(backend, server, ap)
		if err != nil {
			if !errors.Is(err, proxy.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			return
		}
		if strings.ContainsAny(cmd, "\"'\\;#\n\r\t") {
			t.Fatalf("command %q has a special character", cmd)
		}
		f := strings.Split(cmd, " ")
		if len(f) != 6 || f[2] != backend+"/"+server || f[3] != ap.String() {
			t.Fatalf("command %q does not split into the six expected words", cmd)
		}
	})
}
