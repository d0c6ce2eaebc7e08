package priority

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// maxDepth bounds nesting like encoding/json does (it rejects deeper input),
// so both agree on what is valid and recursion stays bounded.
const maxDepth = 10000

// scanner is a validating, allocation-free JSON scanner over one buffer. It
// follows RFC 8259 exactly as encoding/json's json.Valid does (including its
// acceptance of invalid UTF-8 inside strings).
type scanner struct {
	src []byte
	pos int
	err error
}

func (s *scanner) fail(msg string) error {
	if s.err == nil {
		if s.pos >= len(s.src) {
			s.err = fmt.Errorf("%w: offset %d: unexpected end of input (%s)", ErrMalformedJSON, s.pos, msg)
		} else {
			s.err = fmt.Errorf("%w: offset %d: %s near %q", ErrMalformedJSON, s.pos, msg, s.src[s.pos])
		}
	}
	return s.err
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (s *scanner) ws() {
	for s.pos < len(s.src) && isSpace(s.src[s.pos]) {
		s.pos++
	}
}

// peek returns the byte at pos, or 0 at the end.
func (s *scanner) peek() byte {
	if s.pos < len(s.src) {
		return s.src[s.pos]
	}
	return 0
}

// plainString marks bytes that need no attention inside a string.
var plainString = func() (t [256]bool) {
	for i := 0x20; i < 256; i++ {
		t[i] = i != '"' && i != '\\'
	}
	return t
}()

// str scans a string starting at '"'. It reports whether the string holds an
// escape and whether it holds a byte ≥ 0x80.
func (s *scanner) str() (esc, high bool, err error) {
	s.pos++ // opening quote
	src := s.src
	for {
		i := s.pos
		for i < len(src) && plainString[src[i]] {
			if src[i] >= 0x80 {
				high = true
			}
			i++
		}
		s.pos = i
		if i >= len(src) {
			return esc, high, s.fail("unterminated string")
		}
		switch c := src[i]; {
		case c == '"':
			s.pos++
			return esc, high, nil
		case c == '\\':
			esc = true
			if i+1 >= len(src) {
				s.pos = i + 1
				return esc, high, s.fail("unterminated escape")
			}
			switch src[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos = i + 2
			case 'u':
				if i+6 > len(src) {
					s.pos = len(src)
					return esc, high, s.fail("short \\u escape")
				}
				for _, h := range src[i+2 : i+6] {
					if !isHex(h) {
						s.pos = i + 2
						return esc, high, s.fail("invalid \\u escape")
					}
				}
				s.pos = i + 6
			default:
				s.pos = i + 1
				return esc, high, s.fail("invalid escape")
			}
		default:
			return esc, high, s.fail("control character in string")
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func (s *scanner) number() error {
	src := s.src
	i := s.pos
	if i < len(src) && src[i] == '-' {
		i++
	}
	switch {
	case i < len(src) && src[i] == '0':
		i++
	case i < len(src) && '1' <= src[i] && src[i] <= '9':
		for i < len(src) && isDigit(src[i]) {
			i++
		}
	default:
		s.pos = i
		return s.fail("invalid number")
	}
	if i < len(src) && src[i] == '.' {
		i++
		if i >= len(src) || !isDigit(src[i]) {
			s.pos = i
			return s.fail("invalid number fraction")
		}
		for i < len(src) && isDigit(src[i]) {
			i++
		}
	}
	if i < len(src) && (src[i] == 'e' || src[i] == 'E') {
		i++
		if i < len(src) && (src[i] == '+' || src[i] == '-') {
			i++
		}
		if i >= len(src) || !isDigit(src[i]) {
			s.pos = i
			return s.fail("invalid number exponent")
		}
		for i < len(src) && isDigit(src[i]) {
			i++
		}
	}
	s.pos = i
	return nil
}

func (s *scanner) literal(lit string) error {
	if len(s.src)-s.pos < len(lit) || string(s.src[s.pos:s.pos+len(lit)]) != lit {
		return s.fail("invalid literal")
	}
	s.pos += len(lit)
	return nil
}

// value validates one value at pos (no leading space) and moves past it.
// depth is the nesting depth of the container holding the value.
func (s *scanner) value(depth int) error {
	switch c := s.peek(); c {
	case '{':
		return s.object(depth + 1)
	case '[':
		return s.array(depth + 1)
	case '"':
		_, _, err := s.str()
		return err
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		if c == '-' || isDigit(c) {
			return s.number()
		}
		return s.fail("invalid value")
	}
}

func (s *scanner) object(depth int) error {
	if depth > maxDepth {
		return s.fail("nesting too deep")
	}
	s.pos++
	s.ws()
	if s.peek() == '}' {
		s.pos++
		return nil
	}
	for {
		if s.peek() != '"' {
			return s.fail("object key must be a string")
		}
		if _, _, err := s.str(); err != nil {
			return err
		}
		s.ws()
		if s.peek() != ':' {
			return s.fail("missing ':' after object key")
		}
		s.pos++
		s.ws()
		if err := s.value(depth); err != nil {
			return err
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.pos++
			s.ws()
		case '}':
			s.pos++
			return nil
		default:
			return s.fail("missing ',' or '}' in object")
		}
	}
}

func (s *scanner) array(depth int) error {
	if depth > maxDepth {
		return s.fail("nesting too deep")
	}
	s.pos++
	s.ws()
	if s.peek() == ']' {
		s.pos++
		return nil
	}
	for {
		if err := s.value(depth); err != nil {
			return err
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.pos++
			s.ws()
		case ']':
			s.pos++
			return nil
		default:
			return s.fail("missing ',' or ']' in array")
		}
	}
}

// keyString returns the decoded key of the raw string token raw (quotes
// included) as encoding/json would decode it. The fast path (no escapes,
// valid UTF-8) converts without copying when used as a map index.
func keyString(raw []byte, esc, high bool) (string, bool) {
	if !esc && (!high || utf8.Valid(raw)) {
		return "", false // caller uses raw[1:len(raw)-1] directly
	}
	var k string
	if err := json.Unmarshal(raw, &k); err != nil {
		return "", true // validated already; unreachable in practice
	}
	return k, true
}
