package kamal

import (
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// What ERB may read besides ENV: files of the repository (File.read) and
// the revision being deployed and its commit time, for the few commands
// that ask for them. Nothing is ever run.

// readFile implements File.read inside the repository: a relative path
// without "..", no symbolic link on the way (when the fs.FS reports
// them, as os.DirFS does), at most MaxERBFileRead bytes.
func (ev *evaluator) readFile(arg any) (any, error) {
	p, ok := arg.(string)
	if !ok {
		return nil, rubyErr("File.read needs a string (found %s)", rubyType(arg))
	}
	name := path.Clean(strings.TrimPrefix(p, "./"))
	if path.IsAbs(p) || !fs.ValidPath(name) || name == "." || strings.Contains("/"+p+"/", "/../") {
		return nil, unsafeErr("File.read(%q): only files inside the repository can be read (a relative path without ..)", p)
	}
	if ev.ctx.fsys == nil {
		return nil, &evalError{Kind: ErrMissingFile, Msg: "File.read(" + strconv.Quote(p) + "): no repository files available"}
	}
	parts := strings.Split(name, "/")
	for i := range parts {
		fi, err := fs.Lstat(ev.ctx.fsys, strings.Join(parts[:i+1], "/"))
		if err != nil {
			return nil, &evalError{Kind: ErrMissingFile, Msg: "File.read(" + strconv.Quote(p) + "): no such file in the repository"}
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return nil, unsafeErr("File.read(%q): %s is a symbolic link, which capstan does not follow", p, strings.Join(parts[:i+1], "/"))
		}
		if i == len(parts)-1 && !fi.Mode().IsRegular() {
			return nil, rubyErr("File.read(%q): not a regular file", p)
		}
	}
	f, err := ev.ctx.fsys.Open(name)
	if err != nil {
		return nil, &evalError{Kind: ErrMissingFile, Msg: "File.read(" + strconv.Quote(p) + "): cannot open"}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxERBFileRead+1))
	if err != nil {
		return nil, &evalError{Kind: ErrMissingFile, Msg: "File.read(" + strconv.Quote(p) + "): cannot read"}
	}
	if len(data) > MaxERBFileRead {
		return nil, &evalError{Kind: ErrTooLarge, Msg: "File.read(" + strconv.Quote(p) + "): larger than " + strconv.Itoa(MaxERBFileRead) + " bytes"}
	}
	return ev.built(string(data))
}

// command answers the few commands that ask for the revision or the time
// from what capstan knows; nothing is ever run.
func (ev *evaluator) command(text string) (any, error) {
	canon := strings.Join(strings.Fields(strings.NewReplacer("'", "", `"`, "").Replace(text)), " ")
	short := ev.ctx.revision
	if len(short) > ShortRevisionLen {
		short = short[:ShortRevisionLen]
	}
	if what, ok := revisionCommands[canon]; ok {
		if ev.ctx.revision == "" {
			return nil, &evalError{Kind: ErrVersion, Msg: "`" + text + "` is answered with the revision being deployed, which is not known here (not a git checkout)"}
		}
		switch what {
		case "full":
			return ev.ctx.revision + "\n", nil
		case "short":
			return short + "\n", nil
		case "short-nonl":
			return short, nil
		case "full-nonl":
			return ev.ctx.revision, nil
		case "describe":
			if ev.ctx.describe != "" {
				return ev.ctx.describe + "\n", nil
			}
			return short + "\n", nil
		}
	}
	if f, ok := strings.CutPrefix(canon, "date "); ok {
		f = strings.TrimPrefix(f, "-u ")
		if layout, ok := strings.CutPrefix(f, "+"); ok && !strings.Contains(layout, " ") {
			if ev.ctx.revTime.IsZero() {
				return nil, rubyErr("`%s` is answered with the commit time of the revision, which is not known here (not a git checkout)", text)
			}
			s, err := strftime(rubyTime{t: ev.ctx.revTime.UTC(), utc: true}, layout)
			if err != nil {
				return nil, err
			}
			return s + "\n", nil
		}
	}
	return nil, unsafeErr("command `%s` refused: %s", abbreviate(text), hintCommand)
}

// revisionCommands are the git commands answered from the revision, by
// their form with quotes removed and white space collapsed.
var revisionCommands = map[string]string{
	"git rev-parse HEAD":              "full",
	"git rev-parse --verify HEAD":     "full",
	"git rev-parse --short HEAD":      "short",
	"git describe --tags --always":    "describe",
	"git describe --always --tags":    "describe",
	"git log --pretty=format:%h -n 1": "short-nonl",
	"git log -n 1 --pretty=format:%h": "short-nonl",
	"git log -1 --pretty=format:%h":   "short-nonl",
	"git log --pretty=format:%H -n 1": "full-nonl",
	"git log -1 --pretty=format:%H":   "full-nonl",
	"git log -1 --format=%h":          "short",
	"git log -1 --format=%H":          "full",
}
