package simfleet

import (
	"net"
	"net/http"
	"strings"
)

// The fleet's registry: a plain-HTTP Docker registry on 127.0.0.1 that
// knows every tag and answers manifest lookups with the digest the
// simulated hosts' pulls produce, so capstan's digest check, image wait
// and pulls agree. Capstan must list it as an insecure registry.

// startRegistry serves the registry until the fleet closes.
func (f *Fleet) startRegistry() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f.registry = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(f.serveRegistry)}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		srv.Serve(ln)
	}()
	go func() {
		<-f.done
		srv.Close()
	}()
	return nil
}

// serveRegistry answers GET /v2/ and HEAD or GET of
// /v2/<repository>/manifests/<tag>.
func (f *Fleet) serveRegistry(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	p := strings.TrimPrefix(r.URL.Path, "/v2/")
	if p == "" {
		return
	}
	i := strings.LastIndex(p, "/manifests/")
	if i < 0 || (r.Method != http.MethodHead && r.Method != http.MethodGet) {
		f.stats.unknownCmd("registry: " + r.Method + " " + r.URL.Path)
		http.NotFound(w, r)
		return
	}
	f.stats.count("registry " + r.Method + " manifest")
	repo, tag := p[:i], p[i+len("/manifests/"):]
	digest := "sha256:" + hashHex(f.registry+"/"+repo+":"+tag)
	if strings.HasPrefix(tag, "sha256:") {
		digest = tag
	}
	body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + digest + `","size":2}}`
	w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	w.Header().Set("Docker-Content-Digest", digest)
	w.Header().Set("Content-Length", itoa(len(body)))
	if r.Method == http.MethodGet {
		w.Write([]byte(body))
	}
}

// Registry is the address (127.0.0.1:port) of the fleet's registry; image
// references under it resolve to the digests the hosts pull.
func (f *Fleet) Registry() string { return f.registry }
