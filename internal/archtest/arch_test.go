// Package archtest keeps capstan's import rules true (STYLE.md, practice 2:
// one composition root, arrows one way). The rules:
//
//  1. Only the composition root, cmd/... and internal/daemon (capstan
//     serve, which cmd/capstan runs), wires concrete adapters:
//     reconcile/... never imports hostexec, gitwatch, state or
//     internal/daemon; it declares the small interfaces it consumes.
//  2. gitwatch, hostexec and state never import reconcile/... or each other.
//  3. Nothing imports cmd/...
//  4. The test lab (internal/lab) is for tests and cmd/capstan-lab only:
//     no production package imports it.
//  5. internal/redact imports nothing of capstan's (everyone may use it).
//  6. Nothing but cmd/capstan imports internal/daemon.
//  7. internal/failpoint imports nothing of capstan's (any package may
//     hit a failpoint).
//  8. reconcile/window (deploy windows) imports nothing of capstan's: it
//     is pure logic over a time, which reconcile and the daemon consume.
//  9. gitwatch/verify imports nothing of capstan's (signature checks are
//     pure; the daemon or gitwatch may use them).
//  10. internal/forge (pull request events, statuses and comments) is an
//     adapter: it never imports reconcile/..., gitwatch, hostexec or
//     state; only the composition root wires it.
//  11. internal/httpjson imports nothing of capstan's (every API client
//     may use it).
//  12. internal/pgtest (a private PostgreSQL server) is for tests only;
//     it is the one non-test user of internal/testport.
//  13. internal/fence (the lease check every host action asks) imports
//     nothing of capstan's: hostexec and reconcile ask it, the daemon
//     sets it.
//  14. internal/simfleet (simulated SSH hosts for scale tests) is for
//     tests only, and imports nothing of capstan's outside its tests: it
//     recognises what capstan sends as a real host would.
package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/capstan-dev/capstan/"

type rule struct {
	from   string // package path prefix (relative to the module), "" = any
	to     string // forbidden import prefix (relative)
	tests  bool   // also applies to _test.go files
	except string // importer prefix the rule does not apply to
	why    string
}

var rules = []rule{
	{from: "reconcile", to: "hostexec", why: "reconcile declares interfaces; only cmd and internal/daemon wire the SSH adapter"},
	{from: "reconcile", to: "gitwatch", why: "reconcile declares interfaces; only cmd and internal/daemon wire the git adapter"},
	{from: "reconcile", to: "state", why: "reconcile declares interfaces; only cmd and internal/daemon wire the store"},
	{from: "reconcile", to: "internal/daemon", tests: true, why: "the domain never imports the composition root"},
	{from: "gitwatch", to: "reconcile", tests: true, why: "adapters never import the domain"},
	{from: "gitwatch", to: "hostexec", tests: true, why: "adapters never import each other"},
	{from: "gitwatch", to: "state", tests: true, why: "adapters never import each other"},
	{from: "hostexec", to: "reconcile", tests: true, why: "adapters never import the domain"},
	{from: "hostexec", to: "gitwatch", tests: true, why: "adapters never import each other"},
	{from: "hostexec", to: "state", tests: true, why: "adapters never import each other"},
	{from: "state", to: "reconcile", tests: true, why: "adapters never import the domain"},
	{from: "state", to: "hostexec", tests: true, why: "adapters never import each other"},
	{from: "state", to: "gitwatch", tests: true, why: "adapters never import each other"},
	{from: "", to: "cmd", tests: true, why: "nothing imports a command"},
	{from: "", to: "internal/lab", except: "cmd/capstan-lab", why: "the lab is test-only"},
	{from: "internal/redact", to: "", tests: false, why: "the redactor is a leaf"},
	{from: "internal/failpoint", to: "", tests: true, why: "failpoints are a leaf: any package may hit one"},
	{from: "reconcile/window", to: "", tests: true, why: "deploy windows are pure logic: a leaf"},
	{from: "gitwatch/verify", to: "", tests: true, why: "signature verification is a leaf: the daemon and gitwatch may use it"},
	{from: "", to: "internal/daemon", tests: true, except: "cmd/capstan", why: "only cmd/capstan runs the daemon"},
	{from: "internal/forge", to: "reconcile", tests: true, why: "adapters never import the domain"},
	{from: "internal/forge", to: "gitwatch", tests: true, why: "adapters never import each other"},
	{from: "internal/forge", to: "hostexec", tests: true, why: "adapters never import each other"},
	{from: "internal/forge", to: "state", tests: true, why: "adapters never import each other"},
	{from: "reconcile", to: "internal/forge", why: "reconcile declares interfaces; only cmd and internal/daemon wire the forge client"},
	{from: "internal/httpjson", to: "", tests: true, why: "the HTTP JSON helper is a leaf"},
	{from: "", to: "internal/testport", except: "internal/pgtest", why: "free ports are for tests only (and the test PostgreSQL server)"},
	{from: "internal/testport", to: "", tests: true, why: "the test port helper is a leaf"},
	{from: "", to: "internal/pgtest", why: "the private PostgreSQL server is for tests only"},
	{from: "internal/fence", to: "", tests: true, why: "the fence is a leaf: every host action asks it"},
	{from: "", to: "internal/simfleet", why: "the simulated fleet is for tests only"},
	{from: "internal/simfleet", to: "", why: "the simulated fleet models hosts on its own, not with capstan's code (its tests drive capstan)"},
}

func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	fset := token.NewFileSet()
	checked := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); p != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		rel = filepath.ToSlash(rel)
		isTest := strings.HasSuffix(p, "_test.go")
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !strings.HasPrefix(path, module) {
				continue
			}
			target := strings.TrimPrefix(path, module)
			for _, r := range rules {
				if isTest && !r.tests {
					continue
				}
				if !r.forbids(rel, target) {
					continue
				}
				t.Errorf("%s imports %s: %s", filepath.Join(rel, filepath.Base(p)), target, r.why)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("only %d Go files checked; is the walk broken?", checked)
	}
}

// under reports whether pkg is prefix or inside it; "" matches everything.
func under(pkg, prefix string) bool {
	return prefix == "" || pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

func TestRules_CatchAViolation(t *testing.T) {
	// A rule table that could never match would make TestImportRules pass
	// vacuously; check the matcher on a known-bad edge.
	bad := 0
	for _, r := range rules {
		if under("reconcile/kamal", r.from) && under("hostexec", r.to) {
			bad++
		}
	}
	if bad == 0 {
		t.Fatal("reconcile/kamal -> hostexec is not forbidden by any rule")
	}
	for _, edge := range []struct{ from, to string }{{"reconcile", "internal/daemon"}, {"gitwatch", "internal/daemon"}, {"cmd/capstan-lab", "internal/daemon"},
		{"reconcile/window", "reconcile"}, {"reconcile/window", "internal/redact"}, {"gitwatch/verify", "gitwatch"}, {"gitwatch/verify", "internal/redact"},
		{"internal/forge", "reconcile"}, {"internal/forge", "gitwatch"}, {"reconcile/kamal", "internal/forge"}, {"internal/httpjson", "internal/redact"}, {"state", "internal/pgtest"}, {"internal/daemon", "internal/testport"}, {"internal/fence", "state"}} {
		if !forbidden(edge.from, edge.to) {
			t.Errorf("%s -> %s is not forbidden by any rule", edge.from, edge.to)
		}
	}
	for _, edge := range []struct{ from, to string }{{"cmd/capstan", "internal/daemon"}, {"internal/daemon", "state"}, {"internal/daemon", "gitwatch"}, {"internal/daemon", "hostexec"}, {"internal/daemon", "reconcile"},
		{"reconcile", "reconcile/window"}, {"internal/daemon", "reconcile/window"}, {"internal/daemon", "gitwatch/verify"}, {"gitwatch", "gitwatch/verify"},
		{"internal/daemon", "internal/forge"}, {"internal/forge", "internal/webhook"}, {"internal/forge", "internal/httpjson"}, {"internal/notify", "internal/httpjson"}, {"internal/pgtest", "internal/testport"}, {"hostexec", "internal/fence"}, {"reconcile", "internal/fence"}, {"internal/daemon", "internal/fence"}} {
		if forbidden(edge.from, edge.to) {
			t.Errorf("%s -> %s is forbidden, but it is the composition root's", edge.from, edge.to)
		}
	}
}

// forbidden reports whether some rule forbids a non-test file in from to
// import to.
func forbidden(from, to string) bool {
	for _, r := range rules {
		if r.forbids(from, to) {
			return true
		}
	}
	return false
}

// forbids reports whether r forbids package from to import package to.
func (r rule) forbids(from, to string) bool {
	if !under(from, r.from) || (r.except != "" && under(from, r.except)) {
		return false
	}
	return (r.to == "" || under(to, r.to)) && to != from
}
