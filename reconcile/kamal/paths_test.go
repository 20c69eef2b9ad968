package kamal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Paths from the repository: accessory files and directories, and
// symbolic links in the checkout. capstan reads only the checkout and
// writes only under the accessory's directory on the host.

const accHead = hostileHead + "servers:\n  web:\n    hosts: [192.0.2.1]\naccessories:\n  db:\n    image: mysql:8\n    host: 192.0.2.1\n"

func TestLoad_AccessoryPathsOutsideRefused(t *testing.T) {
	cases := []refused{
		{"file local ..", accHead + "    files:\n      - ../capstan/secrets.env:/etc/x #<\n", "accessories.db.files[0]"},
		{"file local .. inside", accHead + "    files:\n      - conf/../../../x:/etc/x #<\n", "accessories.db.files[0]"},
		{"file local absolute", accHead + "    files:\n      - /etc/shadow:/etc/shadow #<\n", "accessories.db.files[0]"},
		{"file local absolute hash", accHead + "    files:\n      - local: /var/lib/capstan/secrets.env #<\n        remote: /x\n", "accessories.db.files[0]"},
		{"file remote ..", accHead + "    files:\n      - conf/job:/../../../etc/cron.d/job #<\n", "accessories.db.files[0]"},
		{"file remote relative", accHead + "    files:\n      - conf/my.cnf:my.cnf #<\n", "accessories.db.files[0]"},
		{"directory host ..", accHead + "    directories:\n      - ../../root/.ssh:/keys #<\n", "accessories.db.directories[0]"},
		{"directory host .. inside", accHead + "    directories:\n      - data/../../../etc:/data #<\n", "accessories.db.directories[0]"},
		{"directory remote relative", accHead + "    directories:\n      - local: data #<\n        remote: data\n", "accessories.db.directories[0]"},
		{"error pages ..", accHead + "error_pages_path: ../errors #<\n", "error_pages_path"},
		{"error pages absolute", accHead + "error_pages_path: /etc #<\n", "error_pages_path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkRefused(t, tc) })
	}
}

// TestPlan_AccessoryPathsUnderTheAccessoryDir: what Kamal allows lands
// where Kamal puts it: files under ~/SERVICE/, relative directories under
// ~/SERVICE/, absolute host directories as given.
func TestPlan_AccessoryPathsUnderTheAccessoryDir(t *testing.T) {
	cfg := accHead + "    files:\n      - conf/my.cnf:/etc/mysql/my.cnf:ro\n    directories:\n      - data:/var/lib/mysql\n      - /srv/backups:/backups\n"
	c, err := load(t, map[string]string{"config/deploy.yml": cfg, ".kamal/secrets": "KAMAL_REGISTRY_PASSWORD=pw\n", "conf/my.cnf": "[mysqld]\n"}, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Plan("192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	acc := p.Accessories[0]
	if got := fmt.Sprint(acc.Files); got != "[{conf/my.cnf $PWD/app-db/etc/mysql/my.cnf 755 }]" {
		t.Errorf("files = %s", got)
	}
	if got := strings.Join(ExpandHome(acc.Directories, "/root"), " "); got != ".kamal/apps/app/env/accessories /root/app-db/data /srv/backups" {
		t.Errorf("directories = %s", got)
	}
	run := strings.Join(acc.Run.Expand("/root"), " ")
	for _, want := range []string{"--volume /root/app-db/etc/mysql/my.cnf:/etc/mysql/my.cnf:ro", "--volume /root/app-db/data:/var/lib/mysql", "--volume /srv/backups:/backups"} {
		if !strings.Contains(run, want) {
			t.Errorf("run lacks %q: %s", want, run)
		}
	}
}

// checkout writes a repository into a new directory; a value starting
// with "->" makes a symbolic link to the rest.
func checkout(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestLoadDir_SymlinksOutOfTheCheckout: every file capstan reads from the
// repository, linked (or reached through a linked directory) to a file
// outside the checkout that holds a marker, is refused with an error
// naming the path, and the marker appears nowhere: not in the error, not
// in anything rendered. The outside files are valid, so reading one would
// show.
func TestLoadDir_SymlinksOutOfTheCheckout(t *testing.T) {
	const marker = "MARKER-outside-7f3a"
	out := t.TempDir()
	cfg := accHead + "    files:\n      - conf/my.cnf:/etc/mysql/my.cnf\nenv:\n  secret: [KAMAL_REGISTRY_PASSWORD]\n"
	outsideCfg := strings.Replace(cfg, "mysql:8", "mysql:"+marker, 1)
	for name, content := range map[string]string{
		"deploy.yml":            outsideCfg,
		"config/deploy.yml":     outsideCfg,
		"secrets.env":           "KAMAL_REGISTRY_PASSWORD=" + marker + "\n",
		"file.conf":             marker + "\n",
		"kamal/secrets":         "KAMAL_REGISTRY_PASSWORD=" + marker + "\n",
		"kamal/secrets-common":  "KAMAL_REGISTRY_PASSWORD=" + marker + "\n",
		"errors/500.html":       marker,
		"config/deploy.st.yml":  "image: " + marker + "\n",
		"config/deploy.prd.yml": "image: " + marker + "\n",
	} {
		p := filepath.Join(out, name)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := map[string]string{
		"config/deploy.yml":    cfg,
		"config/deploy.st.yml": "servers:\n  web:\n    hosts: [192.0.2.9]\n",
		".kamal/secrets":       "KAMAL_REGISTRY_PASSWORD=in-repo\n",
		".kamal/secrets.st":    "KAMAL_REGISTRY_PASSWORD=in-repo\n",
		"conf/my.cnf":          "[mysqld]\n",
	}
	cases := []struct {
		name, link, target, dest, extra string
	}{
		{"deploy.yml absolute", "config/deploy.yml", filepath.Join(out, "deploy.yml"), "", ""},
		{"deploy.yml relative", "config/deploy.yml", "../../" + filepath.Base(out) + "/deploy.yml", "", ""},
		{"destination file", "config/deploy.st.yml", filepath.Join(out, "config/deploy.st.yml"), "st", ""},
		{"config dir", "config", filepath.Join(out, "config"), "", ""},
		{"config dir to /etc", "config", "/etc", "", ""},
		{"secrets", ".kamal/secrets", filepath.Join(out, "secrets.env"), "", ""},
		{"secrets-common", ".kamal/secrets-common", filepath.Join(out, "kamal/secrets-common"), "", ""},
		{"destination secrets", ".kamal/secrets.st", filepath.Join(out, "secrets.env"), "st", ""},
		{".kamal dir", ".kamal", filepath.Join(out, "kamal"), "", ""},
		{"accessory file to /etc/shadow", "conf/my.cnf", "/etc/shadow", "", ""},
		{"accessory file outside", "conf/my.cnf", filepath.Join(out, "file.conf"), "", ""},
		{"accessory file to capstan's secrets", "conf/my.cnf", "../../../../../../../../../.." + filepath.Join(out, "secrets.env"), "", ""},
		{"accessory file in linked dir", "conf", out, "", ""},
		{"error pages dir", "public/errors", filepath.Join(out, "errors"), "", "error_pages_path: public/errors\n"},
		{"secrets to /dev/zero", ".kamal/secrets", "/dev/zero", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{}
			for k, v := range base {
				if k != tc.link && !strings.HasPrefix(k, tc.link+"/") {
					files[k] = v
				}
			}
			files["config/deploy.yml"] += tc.extra
			if tc.link == "config" {
				delete(files, "config/deploy.yml")
				delete(files, "config/deploy.st.yml")
			}
			files[tc.link] = "->" + tc.target
			dir := checkout(t, files)
			c, err := LoadDir(dir, LoadOptions{Version: "v1", Destination: tc.dest, FingerprintKey: testKey})
			var rendered bytes.Buffer
			if err == nil {
				plans, perr := c.Plans()
				if perr == nil {
					_ = WriteScript(&rendered, plans)
					js, _ := json.Marshal(plans)
					rendered.Write(js)
					for _, p := range plans {
						for _, ct := range append(p.Apps, p.Accessories...) {
							rendered.WriteString(ct.EnvFile.Content.Reveal())
						}
					}
				}
				_ = c.WriteYAML(&rendered)
				t.Fatalf("%s → %s loaded", tc.link, tc.target)
			}
			t.Logf("%v", err)
			if !strings.Contains(err.Error(), tc.link) && !strings.Contains(err.Error(), "config/deploy.yml") {
				t.Errorf("error names neither %s nor the file that names it: %v", tc.link, err)
			}
			if strings.Contains(err.Error()+rendered.String(), marker) {
				t.Errorf("the marker from outside the checkout was read: %v", err)
			}
		})
	}
}

// TestLoadDir_PathsOutsideRefused: secrets_path is read through the
// confined file system too, so a path out of the checkout is an error, and
// nothing is read there.
func TestLoadDir_SecretsPathOutsideRefused(t *testing.T) {
	const marker = "MARKER-secrets-path-91c2"
	out := t.TempDir()
	if err := os.WriteFile(filepath.Join(out, "secrets"), []byte("KAMAL_REGISTRY_PASSWORD="+marker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, sp := range []string{filepath.Join(out, "secrets"), "../../" + filepath.Base(out) + "/secrets"} {
		dir := checkout(t, map[string]string{"config/deploy.yml": minimal + "secrets_path: " + sp + "\n"})
		_, err := LoadDir(dir, LoadOptions{Version: "v1", FingerprintKey: testKey})
		if err == nil {
			t.Fatalf("secrets_path %s loaded", sp)
		}
		if !strings.Contains(err.Error(), sp) || strings.Contains(err.Error(), marker) {
			t.Errorf("secrets_path %s: error %v", sp, err)
		}
	}
}

// TestLoadDir_SymlinksInsideTheCheckout: a link that stays inside is
// followed (os.Root allows it), for the configuration, the secrets and an
// accessory file alike.
func TestLoadDir_SymlinksInsideTheCheckout(t *testing.T) {
	dir := checkout(t, map[string]string{
		"deploy/real.yml":     accHead + "    files:\n      - conf/my.cnf:/etc/mysql/my.cnf\n",
		"config/deploy.yml":   "->../deploy/real.yml",
		".kamal/real-secrets": "KAMAL_REGISTRY_PASSWORD=pw\n",
		".kamal/secrets":      "->real-secrets",
		"shared/my.cnf":       "[mysqld]\n",
		"conf/my.cnf":         "->../shared/my.cnf",
	})
	c, err := LoadDir(dir, LoadOptions{Version: "v1", FingerprintKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if c.Registry.Password.Reveal() != "pw" || len(c.Accessories) != 1 {
		t.Errorf("loaded %+v", c)
	}
}
