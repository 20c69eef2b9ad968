package hostexec

import "strings"

// Quote turns argv into one command line for a POSIX shell, such that the
// shell's word splitting yields exactly argv again. It is the only function
// in capstan that builds a remote command line; every remote command goes
// through it.
//
// Each argument made only of characters that are never special to sh
// (letters, digits and _ - . , / : @ % +) is written as is; every other
// argument, including the empty string, is wrapped in single quotes, with
// each embedded single quote written as '\” (close, escaped quote, reopen).
// Bytes are copied verbatim, so invalid UTF-8, newlines, globs, $(...),
// backticks and ; all arrive unchanged. '=' and '~' are always quoted, so
// the first word is never taken as an assignment and no tilde expansion
// happens.
//
// A NUL byte cannot be part of an exec argument on any Unix; [Pool.Run]
// refuses such argv with ErrInvalidArgv.
//
// The remote login shell of the SSH user must be POSIX compatible (sh, dash,
// bash, ash, ksh, zsh); fish and csh quote differently.
func Quote(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		quoteTo(&b, a)
	}
	return b.String()
}

func quoteTo(b *strings.Builder, a string) {
	if a != "" && plain(a) {
		b.WriteString(a)
		return
	}
	b.WriteByte('\'')
	for i := 0; i < len(a); i++ {
		if a[i] == '\'' {
			b.WriteString(`'\''`)
			continue
		}
		b.WriteByte(a[i])
	}
	b.WriteByte('\'')
}

func plain(a string) bool {
	for i := 0; i < len(a); i++ {
		c := a[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("_-.,/:@%+", c) >= 0:
		default:
			return false
		}
	}
	return true
}
