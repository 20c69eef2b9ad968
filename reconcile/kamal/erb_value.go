package kamal

import (
	"errors"
	"strconv"
	"strings"
)

// The values of the ERB subset and their methods (the erbMethods table).

// truthy is Ruby truthiness: only nil and false are false.
func truthy(v any) bool { return v != nil && v != false }

func rubyEqual(a, b any) bool {
	switch x := a.(type) {
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !rubyEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case rubyTime:
		y, ok := b.(rubyTime)
		return ok && x.t.Equal(y.t)
	}
	return a == b
}

func rubyType(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case string:
		return "String"
	case int64:
		return "Integer"
	case bool:
		if v == true {
			return "true"
		}
		return "false"
	case []any:
		return "Array"
	case rubyTime:
		return "Time"
	}
	return "Object"
}

// toS is Ruby's to_s (what <%= %> and "#{}" print).
func toS(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []any:
		return inspect(x)
	case rubyTime:
		if x.utc {
			return x.t.Format("2006-01-02 15:04:05 UTC")
		}
		return x.t.Format("2006-01-02 15:04:05 -0700")
	case int64:
		return strconv.FormatInt(x, 10)
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

// inspect is Ruby's inspect for the value types of the subset.
func inspect(v any) string {
	switch x := v.(type) {
	case nil:
		return "nil"
	case string:
		return strconv.Quote(x)
	case []any:
		parts := make([]string, len(x))
		for i, it := range x {
			parts[i] = inspect(it)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return toS(v)
}

// blankValue is Ruby's blank? of an ERB value (a string as blank does).
func blankValue(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case string:
		return blank(x)
	case []any:
		return len(x) == 0
	}
	return false
}

var errNoMethod = errors.New("no such method")

// callMethod applies a method of erbMethods to a value.
func callMethod(recv any, name string, args []any) (any, error) {
	switch name {
	case "to_s":
		return toS(recv), nil
	case "nil?":
		return recv == nil, nil
	case "present?":
		return !blankValue(recv), nil
	case "blank?":
		return blankValue(recv), nil
	case "presence":
		if blankValue(recv) {
			return nil, nil
		}
		return recv, nil
	}
	var v any
	err := errNoMethod
	switch x := recv.(type) {
	case string:
		v, err = stringMethod(x, name, args)
	case []any:
		v, err = arrayMethod(x, name, args)
	case int64:
		if name == "to_i" {
			v, err = x, nil
		}
	case nil:
		if name == "to_i" {
			v, err = int64(0), nil
		}
	case rubyTime:
		v, err = timeMethod(x, name, args)
	}
	if errors.Is(err, errNoMethod) {
		return nil, rubyErr("undefined method '%s' for %s", name, rubyType(recv))
	}
	return v, err
}

func stringMethod(s, name string, args []any) (any, error) {
	switch name {
	case "strip":
		return strings.Trim(s, " \t\n\v\f\r\x00"), nil
	case "lstrip":
		return strings.TrimLeft(s, " \t\n\v\f\r\x00"), nil
	case "rstrip":
		return strings.TrimRight(s, " \t\n\v\f\r\x00"), nil
	case "chomp":
		if t, ok := strings.CutSuffix(s, "\r\n"); ok {
			return t, nil
		}
		return strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r"), nil
	case "upcase":
		return strings.ToUpper(s), nil
	case "downcase":
		return strings.ToLower(s), nil
	case "empty?":
		return s == "", nil
	case "to_i":
		return leadingInt(s), nil
	case "split":
		sep := " "
		if len(args) == 1 {
			str, ok := args[0].(string)
			if !ok {
				return nil, rubyErr("split needs a string separator (found %s)", rubyType(args[0]))
			}
			sep = str
		}
		var parts []string
		switch sep {
		case " ":
			parts = strings.Fields(s)
		case "":
			parts = strings.Split(s, "")
		default:
			parts = strings.Split(s, sep)
			for len(parts) > 0 && parts[len(parts)-1] == "" {
				parts = parts[:len(parts)-1]
			}
		}
		out := make([]any, len(parts))
		for i, p := range parts {
			out[i] = p
		}
		return out, nil
	}
	return nil, errNoMethod
}

// leadingInt is Ruby's String#to_i: an optional sign and the leading
// digits (underscores between digits allowed), else 0.
func leadingInt(s string) int64 {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' && i > 0 && i+1 < len(s) && isDigit(s[i+1]) {
			continue
		}
		if !isDigit(c) || n > (1<<62)/10 {
			break
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		return -n
	}
	return n
}

func arrayMethod(a []any, name string, args []any) (any, error) {
	switch name {
	case "empty?":
		return len(a) == 0, nil
	case "join":
		sep := ""
		if len(args) == 1 {
			s, ok := args[0].(string)
			if !ok {
				return nil, rubyErr("join needs a string separator (found %s)", rubyType(args[0]))
			}
			sep = s
		}
		parts := make([]string, len(a))
		for i, it := range a {
			if sub, ok := it.([]any); ok {
				j, _ := arrayMethod(sub, "join", args)
				parts[i] = j.(string)
				continue
			}
			parts[i] = toS(it)
		}
		return strings.Join(parts, sep), nil
	}
	return nil, errNoMethod
}

func timeMethod(t rubyTime, name string, args []any) (any, error) {
	switch name {
	case "to_i":
		return t.t.Unix(), nil
	case "utc":
		return rubyTime{t: t.t, utc: true}, nil
	case "iso8601":
		if t.utc {
			return t.t.Format("2006-01-02T15:04:05Z"), nil
		}
		return t.t.Format("2006-01-02T15:04:05-07:00"), nil
	case "strftime":
		f, ok := args[0].(string)
		if !ok {
			return nil, rubyErr("strftime needs a string (found %s)", rubyType(args[0]))
		}
		return strftime(t, f)
	}
	return nil, errNoMethod
}

// strftime supports the directives of simple date and time stamps.
func strftime(t rubyTime, f string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' || i+1 == len(f) {
			b.WriteByte(f[i])
			continue
		}
		i++
		switch f[i] {
		case 'Y':
			b.WriteString(t.t.Format("2006"))
		case 'y':
			b.WriteString(t.t.Format("06"))
		case 'm':
			b.WriteString(t.t.Format("01"))
		case 'd':
			b.WriteString(t.t.Format("02"))
		case 'H':
			b.WriteString(t.t.Format("15"))
		case 'M':
			b.WriteString(t.t.Format("04"))
		case 'S':
			b.WriteString(t.t.Format("05"))
		case 'L':
			b.WriteString(t.t.Format(".000")[1:])
		case 'j':
			b.WriteString(t.t.Format("002"))
		case 's':
			b.WriteString(strconv.FormatInt(t.t.Unix(), 10))
		case 'z':
			b.WriteString(t.t.Format("-0700"))
		case 'Z':
			b.WriteString("UTC")
		case 'F':
			b.WriteString(t.t.Format("2006-01-02"))
		case 'T':
			b.WriteString(t.t.Format("15:04:05"))
		case '%':
			b.WriteByte('%')
		default:
			return "", unsafeErr("strftime directive %%%c is not supported (supported: %%Y %%y %%m %%d %%H %%M %%S %%L %%j %%s %%z %%Z %%F %%T %%%%)", f[i])
		}
	}
	return b.String(), nil
}
