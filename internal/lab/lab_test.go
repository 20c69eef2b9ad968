package lab

import (
	"strings"
	"testing"
)

func TestBuildLayer_Deterministic(t *testing.T) {
	files := []imageFile{{Path: "/b", Mode: 0o644, Content: []byte("b")}, {Path: "/a", Dir: true, Mode: 0o755}}
	l1, err := buildLayer(files)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := buildLayer([]imageFile{files[1], files[0]})
	if err != nil {
		t.Fatal(err)
	}
	if l1.diffID != l2.diffID || l1.digest != l2.digest {
		t.Errorf("same files, different digests: %s/%s vs %s/%s", l1.diffID, l1.digest, l2.diffID, l2.digest)
	}
	l3, _ := buildLayer([]imageFile{{Path: "/b", Mode: 0o644, Content: []byte("c")}})
	if l3.diffID == l1.diffID {
		t.Error("different content, same diffID")
	}
}

func TestSSHDConfig_ListensOnlyOnHostAddress(t *testing.T) {
	c := sshdConfig("10.231.0.12", "/x/hosts/lab2")
	for _, want := range []string{"ListenAddress 10.231.0.12:22\n", "PasswordAuthentication no\n", "PermitRootLogin prohibit-password\n", "HostKey /x/hosts/lab2/ssh/ssh_host_ed25519_key\n"} {
		if !strings.Contains(c, want) {
			t.Errorf("sshd_config lacks %q", want)
		}
	}
}

func TestHostNameRE_OnlyLabNames(t *testing.T) {
	for name, want := range map[string]bool{"lab1": true, "lab20": true, "lab0": false, "lab": false, "labx": false, "mylab1": false, "lab1x": false} {
		if got := hostNameRE.MatchString(name); got != want {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
}
