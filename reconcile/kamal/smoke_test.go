package kamal

import (
	"os"
	"testing"
)

func TestSmoke(t *testing.T) {
	c, err := Load(os.DirFS(os.Getenv("SMOKE_DIR")), LoadOptions{Version: "v1", FingerprintKey: []byte("k"), Destination: os.Getenv("SMOKE_DEST")})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := c.Plans()
	if err != nil {
		t.Fatal(err)
	}
	WriteScript(os.Stdout, ps)
}
