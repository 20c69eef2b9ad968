package kamal

import (
	"io/fs"
	"strings"
	"time"
)

// The evaluator of ERB expressions. Values are Go values: nil, string,
// int64, bool, []any (an array) and rubyTime. Only the methods of
// erbMethods exist; the constants ENV, File and Time answer only
// ENV[k], ENV.fetch, ENV.key?, File.read and Time.now.

// Evaluation limits.
const (
	// MaxERBFileRead is the largest file File.read may return.
	MaxERBFileRead = 64 << 10
	// ShortRevisionLen is the length of the abbreviated commit SHA
	// answered for `git rev-parse --short HEAD` and friends (git's
	// default for repositories under ~16k objects; larger repositories
	// print longer ones).
	ShortRevisionLen = 7
	// maxERBWork bounds the bytes of strings built by one file's ERB.
	maxERBWork = 32 << 20
	// maxLoopIterations bounds the iterations of all each loops of a file.
	maxLoopIterations = 10_000
)

// erbContext is what ERB may read: the environment, the repository
// files and the revision being deployed.
type erbContext struct {
	getenv   func(string) (string, bool)
	fsys     fs.FS
	revision string    // full commit SHA; "" when unknown
	describe string    // git describe --tags --always; "" = the short SHA
	revTime  time.Time // commit time; zero when unknown
}

// rubyTime is a Time value; utc records whether .utc was called (it
// changes to_s and iso8601). Times are always the commit time, in UTC.
type rubyTime struct {
	t   time.Time
	utc bool
}

// methodArity is the number of arguments a method accepts.
type methodArity struct{ min, max int }

// erbMethods is the fixed table of methods on values. Anything else is
// refused when the tag is parsed.
//
//	strip lstrip rstrip chomp   String: white space / one trailing newline removed
//	upcase downcase             String
//	to_s                        any: "" for nil, Ruby's inspect for arrays
//	to_i                        String (leading integer, else 0), Integer, nil (0), Time (Unix seconds)
//	empty?                      String, Array
//	nil?                        any
//	present? blank? presence    any, with Rails' rules (blank: nil, false, "", white space, [])
//	split([sep])                String: by white space, or by the string sep (trailing empty fields dropped)
//	join([sep])                 Array
//	utc iso8601 strftime(fmt)   Time
var erbMethods = map[string]methodArity{
	"strip": {0, 0}, "lstrip": {0, 0}, "rstrip": {0, 0}, "chomp": {0, 0},
	"upcase": {0, 0}, "downcase": {0, 0}, "to_s": {0, 0}, "to_i": {0, 0},
	"empty?": {0, 0}, "nil?": {0, 0}, "present?": {0, 0}, "blank?": {0, 0}, "presence": {0, 0},
	"split": {0, 1}, "join": {0, 1}, "utc": {0, 0}, "iso8601": {0, 0}, "strftime": {1, 1},
}

// constMethods are the methods of ENV, File and Time.
var constMethods = map[string]map[string]methodArity{
	"ENV":  {"fetch": {1, 2}, "key?": {1, 1}, "has_key?": {1, 1}, "include?": {1, 1}},
	"File": {"read": {1, 1}},
	"Time": {"now": {0, 0}},
}

// checkMethod refuses, at parse time, a call outside the tables; nargs
// < 0 checks the name only.
func checkMethod(recv expr, name string, nargs int) error {
	table, what := erbMethods, "method ."+name
	if c, ok := recv.(constExpr); ok {
		table, what = constMethods[c.name], c.name+"."+name
	}
	a, ok := table[name]
	if !ok {
		if c, isConst := recv.(constExpr); isConst && c.name == "ENV" && (name == "[]=" || name == "store" || name == "delete" || name == "update" || name == "replace") {
			return unsafeErr("ERB may not change the environment (ENV.%s): set the variable in capstan's environment or in the secrets env file (secrets_env_file in capstan.yml)", name)
		}
		return unsafeErr("%s is not available: %s", what, hintRuby)
	}
	if nargs >= 0 && (nargs < a.min || nargs > a.max) {
		return unsafeErr("%s takes %d to %d arguments (found %d)", what, a.min, a.max, nargs)
	}
	return nil
}

// evaluator evaluates expressions of one file; scopes hold the local
// variables (the innermost last).
type evaluator struct {
	ctx    *erbContext
	scopes []map[string]any
	work   int
	iters  int
}

func (ev *evaluator) lookup(name string) (any, bool) {
	for i := len(ev.scopes) - 1; i >= 0; i-- {
		if v, ok := ev.scopes[i][name]; ok {
			return v, true
		}
	}
	return nil, false
}

// assign sets an existing variable in the scope that has it, else
// defines it in the innermost scope (Ruby's block scoping).
func (ev *evaluator) assign(name string, v any) {
	for i := len(ev.scopes) - 1; i >= 0; i-- {
		if _, ok := ev.scopes[i][name]; ok {
			ev.scopes[i][name] = v
			return
		}
	}
	ev.scopes[len(ev.scopes)-1][name] = v
}

// built charges a newly built string to the work budget.
func (ev *evaluator) built(s string) (any, error) {
	ev.work += len(s)
	if ev.work > maxERBWork || len(s) > MaxFileSize {
		return nil, &evalError{Kind: ErrTooLarge, Msg: "ERB builds more than the allowed amount of text"}
	}
	return s, nil
}

func (ev *evaluator) eval(e expr) (any, error) {
	switch e := e.(type) {
	case litExpr:
		return e.v, nil
	case strExpr:
		var b strings.Builder
		for _, part := range e.parts {
			if part.e == nil {
				b.WriteString(part.lit)
				continue
			}
			v, err := ev.eval(part.e)
			if err != nil {
				return nil, err
			}
			b.WriteString(toS(v))
			if b.Len() > MaxFileSize {
				return ev.built(b.String())
			}
		}
		return ev.built(b.String())
	case arrExpr:
		out := make([]any, len(e.items))
		for i, it := range e.items {
			v, err := ev.eval(it)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	case varExpr:
		if v, ok := ev.lookup(e.name); ok {
			return v, nil
		}
		return nil, rubyErr("undefined local variable or method '%s'", e.name)
	case constExpr:
		return nil, unsafeErr("%s is only available through ENV[...], ENV.fetch, ENV.key?, File.read and Time.now", e.name)
	case cmdExpr:
		return ev.command(e.text)
	case notExpr:
		v, err := ev.eval(e.e)
		return !truthy(v), err
	case orExpr, andExpr:
		return ev.logic(e)
	case eqExpr:
		a, err := ev.eval(e.a)
		if err != nil {
			return nil, err
		}
		b, err := ev.eval(e.b)
		if err != nil {
			return nil, err
		}
		return rubyEqual(a, b) != e.neg, nil
	case arithExpr:
		return ev.arith(e)
	case condExpr:
		c, err := ev.eval(e.c)
		if err != nil {
			return nil, err
		}
		if truthy(c) {
			return ev.eval(e.a)
		}
		return ev.eval(e.b)
	case assignExpr:
		v, err := ev.eval(e.e)
		if err != nil {
			return nil, err
		}
		ev.assign(e.name, v)
		return v, nil
	case modExpr:
		c, err := ev.eval(e.cond)
		if err != nil || truthy(c) == e.unless {
			return nil, err
		}
		return ev.eval(e.e)
	case indexExpr:
		return ev.index(e)
	case callExpr:
		return ev.call(e)
	}
	return nil, unsafeErr("unsupported expression")
}

func (ev *evaluator) logic(e expr) (any, error) {
	var a, b expr
	or := false
	switch e := e.(type) {
	case orExpr:
		a, b, or = e.a, e.b, true
	case andExpr:
		a, b = e.a, e.b
	}
	v, err := ev.eval(a)
	if err != nil || truthy(v) == or {
		return v, err
	}
	return ev.eval(b)
}

// arith is + on strings, integers and arrays, - and * on integers.
func (ev *evaluator) arith(e arithExpr) (any, error) {
	a, err := ev.eval(e.a)
	if err != nil {
		return nil, err
	}
	b, err := ev.eval(e.b)
	if err != nil {
		return nil, err
	}
	x, xInt := a.(int64)
	y, yInt := b.(int64)
	if xInt && yInt {
		switch e.op {
		case "+":
			return x + y, nil
		case "-":
			return x - y, nil
		default:
			return x * y, nil
		}
	}
	if e.op == "+" {
		switch x := a.(type) {
		case string:
			if y, ok := b.(string); ok {
				return ev.built(x + y)
			}
		case []any:
			if y, ok := b.([]any); ok {
				if len(x)+len(y) > maxLoopIterations {
					return nil, &evalError{Kind: ErrTooLarge, Msg: "array too large"}
				}
				return append(append([]any{}, x...), y...), nil
			}
		}
	}
	return nil, rubyErr("%s %s %s is not supported (no implicit conversion)", rubyType(a), e.op, rubyType(b))
}

func (ev *evaluator) index(e indexExpr) (any, error) {
	k, err := ev.eval(e.key)
	if err != nil {
		return nil, err
	}
	if c, ok := e.recv.(constExpr); ok {
		if c.name != "ENV" {
			return nil, unsafeErr("%s[...] is not available: %s", c.name, hintRuby)
		}
		name, ok := k.(string)
		if !ok {
			return nil, rubyErr("ENV[...] needs a string (found %s)", rubyType(k))
		}
		if v, found := ev.ctx.getenv(name); found {
			return v, nil
		}
		return nil, nil
	}
	recv, err := ev.eval(e.recv)
	if err != nil {
		return nil, err
	}
	arr, ok := recv.([]any)
	i, isInt := k.(int64)
	if !ok || !isInt {
		return nil, rubyErr("indexing is supported only on arrays with an integer (found %s[%s])", rubyType(recv), rubyType(k))
	}
	if i < 0 {
		i += int64(len(arr))
	}
	if i < 0 || i >= int64(len(arr)) {
		return nil, nil
	}
	return arr[i], nil
}

func (ev *evaluator) call(e callExpr) (any, error) {
	args := make([]any, len(e.args))
	for i, a := range e.args {
		v, err := ev.eval(a)
		if err != nil {
			return nil, err
		}
		args[i] = v
	}
	if c, ok := e.recv.(constExpr); ok {
		return ev.constCall(c.name, e.name, args)
	}
	recv, err := ev.eval(e.recv)
	if err != nil {
		return nil, err
	}
	v, err := callMethod(recv, e.name, args)
	if s, ok := v.(string); ok && err == nil {
		return ev.built(s)
	}
	return v, err
}

func (ev *evaluator) constCall(c, name string, args []any) (any, error) {
	switch c + "." + name {
	case "ENV.fetch":
		k, ok := args[0].(string)
		if !ok {
			return nil, rubyErr("ENV.fetch needs a string (found %s)", rubyType(args[0]))
		}
		if v, found := ev.ctx.getenv(k); found {
			return v, nil
		}
		if len(args) == 2 {
			return args[1], nil
		}
		return nil, rubyErr("environment variable %s is not set (ENV.fetch without a default)", k)
	case "ENV.key?", "ENV.has_key?", "ENV.include?":
		k, ok := args[0].(string)
		if !ok {
			return nil, rubyErr("ENV.%s needs a string (found %s)", name, rubyType(args[0]))
		}
		_, found := ev.ctx.getenv(k)
		return found, nil
	case "File.read":
		return ev.readFile(args[0])
	case "Time.now":
		if ev.ctx.revTime.IsZero() {
			return nil, rubyErr("Time.now is answered with the commit time of the revision, which is not known here (not a git checkout); write the value in deploy.yml or under x-capstan")
		}
		return rubyTime{t: ev.ctx.revTime.UTC()}, nil
	}
	return nil, unsafeErr("%s.%s is not available: %s", c, name, hintRuby)
}
