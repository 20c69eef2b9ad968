package webhook

import (
	"errors"
	"testing"
)

func TestParseRegistry(t *testing.T) {
	body := `{"events":[
	 {"id":"1","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","repository":"acme/app","tag":"v42"},"request":{"host":"registry.internal:5000"}},
	 {"id":"2","action":"push","target":{"mediaType":"application/octet-stream","digest":"sha256:bb","repository":"acme/app"}},
	 {"id":"3","action":"pull","target":{"repository":"acme/app","tag":"v41"}},
	 {"id":"4","action":"push","target":{"repository":"acme/app","tag":"$(reboot)"}},
	 {"id":"5","action":"push","target":{"repository":"../../etc","tag":"v1"}},
	 {"id":"6","action":"delete","target":{"repository":"acme/app","tag":"v40"}}]}`
	got, err := ParseRegistry([]byte(body))
	if err != nil || len(got) != 1 {
		t.Fatalf("%+v %v", got, err)
	}
	if g := got[0]; g.Repository != "acme/app" || g.Tag != "v42" || g.Digest != "sha256:aa" || g.Host != "registry.internal:5000" {
		t.Errorf("%+v", g)
	}
	for _, bad := range []string{"", "{}", "not json", `{"events":"x"}`} {
		if _, err := ParseRegistry([]byte(bad)); !errors.Is(err, ErrPayload) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func FuzzParseRegistry(f *testing.F) {
	f.Add([]byte(`{"events":[{"action":"push","target":{"repository":"a/b","tag":"v1"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ParseRegistry(b)
		if err != nil && got != nil {
			t.Fatal("results with an error")
		}
		for _, p := range got {
			if !tagRE.MatchString(p.Tag) || !repoRE.MatchString(p.Repository) {
				t.Fatalf("ill-formed push %+v", p)
			}
		}
	})
}
