package kamal

import "os"

// LoadDir is Load over the directory dir (a checkout), confined to it: a
// path or symlink that leads outside dir (config/deploy.yml linking to
// /etc/shadow, .kamal/secrets linking to the daemon's own secrets file) is
// an error naming the file, and nothing outside dir is read. Symlinks that
// stay inside dir are followed.
func LoadDir(dir string, opts LoadOptions) (*Config, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return Load(root.FS(), opts)
}
