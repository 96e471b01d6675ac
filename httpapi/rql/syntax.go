package rql

import "strings"

// The syntax tree is built before any field or operator is looked at, so that the grammar (and its
// bounds) stays apart from the meaning of operators, which compile.go gives.
type synKind int

const (
	synValue synKind = iota // a bare word: a field, a value or a sort key
	synCall                 // name(args...), also what the FIQL shorthand a=b becomes
	synParen                // (items...): a group of conditions or an array of values
)

type syntax struct {
	kind synKind
	text string    // the word, or the name of a call
	sep  byte      // synParen: the delimiter between items (',', '&' or '|'), 0 for fewer than two
	args []*syntax // arguments of a call or items of a group
	pos  int       // offset in the once-decoded query, for error messages
}

type syntaxParser struct {
	s     string
	pos   int
	depth int
	nodes int
}

// parseSyntax parses the once-decoded query: items joined by '&' or '|' (not both).
func parseSyntax(s string) ([]*syntax, byte, error) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return nil, 0, invalidf("illegal character %q at position %d", c, i)
		}
	}
	p := syntaxParser{s: s}
	return p.list("&|", 0)
}

// list parses items separated by one of the delimiters in seps up to the byte end (0: end of input),
// and consumes end.
func (p *syntaxParser) list(seps string, end byte) ([]*syntax, byte, error) {
	if end != 0 && p.peek() == end {
		p.pos++
		return nil, 0, nil
	}
	var items []*syntax
	var sep byte
	for {
		it, err := p.item()
		if err != nil {
			return nil, 0, err
		}
		items = append(items, it)
		c := p.peek()
		switch {
		case c == end && (end != 0 || p.pos == len(p.s)):
			if end != 0 {
				p.pos++
			}
			return items, sep, nil
		case p.pos == len(p.s):
			return nil, 0, invalidf("unbalanced parentheses: missing %q at the end", end)
		case c != 0 && strings.IndexByte(seps, c) >= 0:
			if sep != 0 && sep != c {
				return nil, 0, invalidf("cannot mix %q and %q in one group at position %d: use and(), or() or parentheses", sep, c, p.pos)
			}
			sep = c
			p.pos++
		case c == ')':
			return nil, 0, invalidf("unbalanced parentheses: unexpected ')' at position %d", p.pos)
		default:
			return nil, 0, invalidf("unexpected %q at position %d", c, p.pos)
		}
	}
}

// item parses a call, a parenthesised group, a FIQL shorthand (a=b, a=op=b, a<b...) or a bare word.
func (p *syntaxParser) item() (*syntax, error) {
	start := p.pos
	if p.peek() == '(' {
		return p.paren()
	}
	word, err := p.word()
	if err != nil {
		return nil, err
	}
	if p.peek() == '(' {
		call := word
		call.kind = synCall
		if err := p.enter(); err != nil {
			return nil, err
		}
		p.pos++
		if call.args, _, err = p.list(",", ')'); err != nil {
			return nil, err
		}
		p.depth--
		return call, nil
	}
	op := p.shorthandOp()
	if op == "" {
		return word, nil
	}
	call, err := p.node(synCall, op, start)
	if err != nil {
		return nil, err
	}
	var operand *syntax
	if p.peek() == '(' {
		operand, err = p.paren()
	} else {
		operand, err = p.word()
	}
	if err != nil {
		return nil, err
	}
	call.args = []*syntax{word, operand}
	return call, nil
}

func (p *syntaxParser) paren() (*syntax, error) {
	group, err := p.node(synParen, "", p.pos)
	if err != nil {
		return nil, err
	}
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.pos++
	if group.args, group.sep, err = p.list(",&|", ')'); err != nil {
		return nil, err
	}
	p.depth--
	return group, nil
}

// word scans a bare word, possibly empty. Everything but the structural characters belongs to it,
// and '!' only ends it when it starts "!=".
func (p *syntaxParser) word() (*syntax, error) {
	start := p.pos
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		if c == '(' || c == ')' || c == ',' || c == '&' || c == '|' || c == '=' || c == '<' || c == '>' ||
			c == '!' && strings.HasPrefix(p.s[p.pos:], "!=") {
			break
		}
		p.pos++
	}
	return p.node(synValue, p.s[start:p.pos], start)
}

// shorthandOp consumes a FIQL operator and returns the call it stands for, or "" when there is none.
func (p *syntaxParser) shorthandOp() string {
	rest := p.s[p.pos:]
	for _, o := range [...]struct{ tok, op string }{
		{"==", "eq"}, {"!=", "ne"}, {"<=", "le"}, {">=", "ge"}, {"<", "lt"}, {">", "gt"},
	} {
		if strings.HasPrefix(rest, o.tok) {
			p.pos += len(o.tok)
			return o.op
		}
	}
	if !strings.HasPrefix(rest, "=") {
		return ""
	}
	// =name= names the operator, as in size=gt=100.
	n := 1
	for n < len(rest) && (rest[n] >= 'a' && rest[n] <= 'z' || rest[n] >= 'A' && rest[n] <= 'Z') {
		n++
	}
	if n > 1 && n < len(rest) && rest[n] == '=' {
		p.pos += n + 1
		return rest[1:n]
	}
	p.pos++
	return "eq"
}

func (p *syntaxParser) node(kind synKind, text string, pos int) (*syntax, error) {
	p.nodes++
	if p.nodes > MaxNodes {
		return nil, invalidf("more than %d calls and values", MaxNodes)
	}
	return &syntax{kind: kind, text: text, pos: pos}, nil
}

func (p *syntaxParser) enter() error {
	p.depth++
	if p.depth > MaxDepth {
		return invalidf("nesting deeper than %d at position %d", MaxDepth, p.pos)
	}
	return nil
}

func (p *syntaxParser) peek() byte {
	if p.pos < len(p.s) {
		return p.s[p.pos]
	}
	return 0
}
