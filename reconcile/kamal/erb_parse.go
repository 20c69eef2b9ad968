package kamal

// The recursive-descent parser of the Ruby subset evaluated inside ERB
// tags. Precedence, lowest first, as in Ruby:
//
//	stmt    = NAME "=" ternary | ternary [("if" | "unless") ternary]
//	ternary = or ["?" ternary ":" ternary]
//	or      = and {"||" and}
//	and     = eq {"&&" eq}
//	eq      = plus [("==" | "!=") plus]
//	plus    = mul {("+" | "-") mul}
//	mul     = unary {"*" unary}
//	unary   = "!" unary | postfix
//	postfix = primary {"." METHOD ["(" args ")"] | "[" ternary "]"}
//	primary = INT | STRING | %w[...] | `cmd` | %x(cmd) | "[" args "]" |
//	          "(" stmt ")" | nil | true | false | NAME | ENV | File | Time
//
// METHOD must be in erbMethods (or ENV.fetch / ENV.key? / File.read /
// Time.now on those constants); anything else is refused while parsing.

// Parser limits.
const maxExprDepth = 64

type expr interface{}

type (
	litExpr   struct{ v any }
	strExpr   struct{ parts []strNode }
	arrExpr   struct{ items []expr }
	varExpr   struct{ name string }
	constExpr struct{ name string }
	cmdExpr   struct{ text string }
	notExpr   struct{ e expr }
	orExpr    struct{ a, b expr }
	andExpr   struct{ a, b expr }
	eqExpr    struct {
		a, b expr
		neg  bool
	}
	arithExpr struct {
		op   string // + - *
		a, b expr
	}
	condExpr   struct{ c, a, b expr }
	assignExpr struct {
		name string
		e    expr
	}
	modExpr struct { // e if cond / e unless cond
		e, cond expr
		unless  bool
	}
	indexExpr struct{ recv, key expr }
	callExpr  struct {
		recv expr
		name string
		args []expr
	}
)

type strNode struct {
	lit string
	e   expr // nil for a literal piece
}

type exprParser struct {
	toks  []token
	i     int
	depth int
}

// parseExpr parses the code of an output or statement tag.
func parseExpr(code string) (expr, error) {
	toks, err := lexERB(code)
	if err != nil {
		return nil, err
	}
	p := &exprParser{toks: toks}
	e, err := p.stmt()
	if err != nil {
		return nil, err
	}
	if err := p.expectEOF(); err != nil {
		return nil, err
	}
	return e, nil
}

func (p *exprParser) peek() token { return p.toks[p.i] }

func (p *exprParser) next() token {
	t := p.toks[p.i]
	if t.kind != tkEOF {
		p.i++
	}
	return t
}

func (p *exprParser) isOp(op string) bool {
	t := p.peek()
	return t.kind == tkOp && t.text == op
}

func (p *exprParser) isWord(w string) bool {
	t := p.peek()
	return t.kind == tkIdent && t.text == w
}

func (p *exprParser) expect(op string) error {
	if !p.isOp(op) {
		return p.unexpected("expected " + op)
	}
	p.i++
	return nil
}

func (p *exprParser) expectEOF() error {
	if p.peek().kind != tkEOF {
		return p.unexpected("expected the end of the tag")
	}
	return nil
}

// unexpected reports the current token as unsupported syntax.
func (p *exprParser) unexpected(why string) error {
	t := p.peek()
	switch t.kind {
	case tkEOF:
		return unsafeErr("unsupported syntax: the expression ends early (%s)", why)
	case tkIdent, tkConst, tkOp:
		if erbKeywordsRefused[t.text] {
			return unsafeErr("unsupported Ruby keyword %q", t.text)
		}
		return unsafeErr("unsupported syntax at %q (%s)", t.text, why)
	default:
		return unsafeErr("unsupported syntax (%s)", why)
	}
}

var erbKeywordsRefused = map[string]bool{"and": true, "or": true, "not": true, "defined?": true, "def": true, "class": true, "module": true, "while": true, "until": true, "case": true, "begin": true, "rescue": true, "yield": true, "self": true, "lambda": true, "proc": true, "for": true, "::": true, "=~": true, "<<": true, "**": true, "+=": true, "-=": true, "||=": true, "&&=": true}

func (p *exprParser) enter() error {
	p.depth++
	if p.depth > maxExprDepth {
		return unsafeErr("expression nested deeper than %d levels", maxExprDepth)
	}
	return nil
}

func (p *exprParser) stmt() (expr, error) {
	var e expr
	var err error
	if t := p.peek(); t.kind == tkIdent && !erbReserved[t.text] && p.toks[p.i+1].kind == tkOp && p.toks[p.i+1].text == "=" {
		p.i += 2
		if e, err = p.ternary(); err != nil {
			return nil, err
		}
		e = assignExpr{name: t.text, e: e}
	} else if e, err = p.ternary(); err != nil {
		return nil, err
	}
	if p.isWord("if") || p.isWord("unless") {
		unless := p.next().text == "unless"
		c, err := p.ternary()
		if err != nil {
			return nil, err
		}
		return modExpr{e: e, cond: c, unless: unless}, nil
	}
	return e, nil
}

func (p *exprParser) ternary() (expr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	c, err := p.or()
	if err != nil || !p.isOp("?") {
		return c, err
	}
	p.i++
	a, err := p.ternary()
	if err != nil {
		return nil, err
	}
	if err := p.expect(":"); err != nil {
		return nil, err
	}
	b, err := p.ternary()
	if err != nil {
		return nil, err
	}
	return condExpr{c: c, a: a, b: b}, nil
}

// binary parses sub {op sub} for the operators ops.
func (p *exprParser) binary(sub func() (expr, error), ops ...string) (expr, error) {
	a, err := sub()
	if err != nil {
		return nil, err
	}
	for {
		op := ""
		for _, o := range ops {
			if p.isOp(o) {
				op = o
			}
		}
		if op == "" {
			return a, nil
		}
		p.i++
		b, err := sub()
		if err != nil {
			return nil, err
		}
		switch op {
		case "||":
			a = orExpr{a, b}
		case "&&":
			a = andExpr{a, b}
		case "==", "!=":
			a = eqExpr{a: a, b: b, neg: op == "!="}
		case "+", "-", "*":
			a = arithExpr{op: op, a: a, b: b}
		}
	}
}

func (p *exprParser) or() (expr, error)   { return p.binary(p.and, "||") }
func (p *exprParser) and() (expr, error)  { return p.binary(p.eq, "&&") }
func (p *exprParser) eq() (expr, error)   { return p.binary(p.plus, "==", "!=") }
func (p *exprParser) plus() (expr, error) { return p.binary(p.mul, "+", "-") }
func (p *exprParser) mul() (expr, error)  { return p.binary(p.unary, "*") }

func (p *exprParser) unary() (expr, error) {
	if p.isOp("!") {
		p.i++
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		e, err := p.unary()
		if err != nil {
			return nil, err
		}
		return notExpr{e}, nil
	}
	return p.postfix()
}

func (p *exprParser) postfix() (expr, error) {
	e, err := p.primary()
	if err != nil {
		return nil, err
	}
	for {
		switch {
		case p.isOp("."):
			p.i++
			t := p.next()
			if t.kind != tkIdent {
				p.i--
				return nil, p.unexpected("expected a method name")
			}
			if err := checkMethod(e, t.text, -1); err != nil {
				return nil, err
			}
			var args []expr
			if p.isOp("(") && !p.peek().space {
				p.i++
				if args, err = p.args(")"); err != nil {
					return nil, err
				}
			}
			if err := checkMethod(e, t.text, len(args)); err != nil {
				return nil, err
			}
			e = callExpr{recv: e, name: t.text, args: args}
		case p.isOp("[") && !p.peek().space:
			p.i++
			k, err := p.ternary()
			if err != nil {
				return nil, err
			}
			if err := p.expect("]"); err != nil {
				return nil, err
			}
			if p.isOp("=") {
				return nil, unsafeErr("ERB may not change the environment or other values (%s[...] = ...): set the variable in capstan's environment or in the secrets env file (secrets_env_file in capstan.yml)", constName(e))
			}
			e = indexExpr{recv: e, key: k}
		case p.isOp("::"):
			return nil, unsafeErr("Ruby constant %s::... is not available: %s", constName(e), hintRuby)
		default:
			return e, nil
		}
	}
}

func constName(e expr) string {
	if c, ok := e.(constExpr); ok {
		return c.name
	}
	return "value"
}

// args parses a comma-separated list up to the closing delimiter.
func (p *exprParser) args(closing string) ([]expr, error) {
	var out []expr
	for !p.isOp(closing) {
		e, err := p.ternary()
		if err != nil {
			return nil, err
		}
		out = append(out, e)
		if !p.isOp(",") {
			break
		}
		p.i++
	}
	return out, p.expect(closing)
}

var erbReserved = map[string]bool{"nil": true, "true": true, "false": true, "if": true, "unless": true, "elsif": true, "else": true, "end": true, "do": true, "then": true}

func (p *exprParser) primary() (expr, error) {
	t := p.peek()
	switch t.kind {
	case tkInt:
		p.i++
		return litExpr{t.num}, nil
	case tkStr:
		p.i++
		return p.str(t.parts)
	case tkWords:
		p.i++
		items := make([]expr, len(t.words))
		for i, w := range t.words {
			items[i] = litExpr{w}
		}
		return arrExpr{items}, nil
	case tkCmd:
		p.i++
		return cmdExpr{text: t.text}, nil
	case tkConst:
		p.i++
		switch t.text {
		case "ENV", "File", "Time":
			return constExpr{t.text}, nil
		}
		return nil, unsafeErr("Ruby constant %s is not available: %s", t.text, hintRuby)
	case tkIdent:
		switch t.text {
		case "nil":
			p.i++
			return litExpr{nil}, nil
		case "true", "false":
			p.i++
			return litExpr{t.text == "true"}, nil
		}
		if erbReserved[t.text] || erbKeywordsRefused[t.text] {
			return nil, p.unexpected("keyword in an expression")
		}
		p.i++
		if n := p.peek(); n.kind == tkOp && n.text == "(" || n.kind == tkStr || n.kind == tkConst || n.kind == tkIdent && !erbReserved[n.text] {
			if t.text == "require" || t.text == "load" || t.text == "require_relative" {
				return nil, unsafeErr("%s is not available: %s", t.text, hintRuby)
			}
			return nil, unsafeErr("method %s(...) is not available: %s", t.text, hintRuby)
		}
		return varExpr{t.text}, nil
	case tkOp:
		switch t.text {
		case "(":
			p.i++
			if err := p.enter(); err != nil {
				return nil, err
			}
			defer func() { p.depth-- }()
			e, err := p.stmt()
			if err != nil {
				return nil, err
			}
			return e, p.expect(")")
		case "[":
			p.i++
			items, err := p.args("]")
			if err != nil {
				return nil, err
			}
			return arrExpr{items}, nil
		}
	}
	return nil, p.unexpected("expected a value")
}

// str parses the interpolations of a string literal.
func (p *exprParser) str(parts []strPart) (expr, error) {
	var out []strNode
	for _, part := range parts {
		if part.toks == nil {
			out = append(out, strNode{lit: part.lit})
			continue
		}
		sub := &exprParser{toks: part.toks, depth: p.depth + 1}
		if sub.peek().kind == tkEOF {
			continue // "#{}" is ""
		}
		e, err := sub.stmt()
		if err != nil {
			return nil, err
		}
		if err := sub.expectEOF(); err != nil {
			return nil, err
		}
		out = append(out, strNode{e: e})
	}
	if len(out) == 1 && out[0].e == nil {
		return litExpr{out[0].lit}, nil
	}
	return strExpr{out}, nil
}

// hintRuby is the hint of refused Ruby.
const hintRuby = "capstan evaluates only a safe subset of ERB (README, \"ERB in deploy.yml\"): put the value in capstan's environment, the secrets env file (secrets_env_file in capstan.yml) or x-capstan"

// hintCommand is the hint of refused commands.
const hintCommand = "capstan never runs programs from deploy.yml: put the value in the secrets env file (secrets_env_file in capstan.yml) or under x-capstan"
