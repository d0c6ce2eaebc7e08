package jsonx

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"strconv"
)

// MaxDepth is the deepest nesting of objects and arrays that [Object]
// accepts; the outer object is depth 1. Hostile deep nesting is refused
// before it can cost a decoder further down the pipeline.
const MaxDepth = 512

// Object reports whether b is exactly one JSON object (RFC 8259),
// optionally surrounded by whitespace, with valid UTF-8 in every string,
// and nesting no deeper than [MaxDepth]. It returns nil or a
// *[SyntaxError] locating the first problem.
//
// Object does not allocate when b is valid, and does not retain b.
func Object(b []byte) error {
	return walk(b, nil)
}

// ObjectMembers is [Object] and [Members] in one pass: it validates b
// exactly as Object does and calls fn for each member of the outer object,
// in order, duplicates included, as soon as the member's value is known to
// be valid. Each Member is as Members gives it, except that its Value is
// valid JSON.
//
// If ObjectMembers returns a *[SyntaxError], b is not a valid object and
// the calls already made concern a prefix of it: the caller must discard
// what it learnt from them. An error returned by fn stops the scan and is
// returned as is.
//
// Use it on the hot path instead of Object followed by Members: it reads b
// once. It does not allocate when b is valid and no member name has an
// escape, and does not retain b.
func ObjectMembers(b []byte, fn func(m Member) error) error {
	return walk(b, fn)
}

// walk is the one validating object scanner, behind [Object] and
// [ObjectMembers]. It reads the outer object's members itself and calls fn
// (when not nil) for each, after scanContainer, scanString or scanScalar
// has validated its value. Checking fn once per top-level member, rather
// than at every depth, keeps Object as fast as a scanner of its own.
func walk(b []byte, fn func(m Member) error) error {
	n := len(b)
	i := skipSpace(b, 0)
	if i >= n {
		return errEOF(b)
	}
	if b[i] != '{' {
		return errAt(i, "not an object: starts with "+quoteByte(b[i]))
	}
	i = skipSpace(b, i+1)
	if i >= n {
		return errEOF(b)
	}
	if b[i] == '}' {
		return trailing(b, i+1, "object")
	}
	var scratch []byte // decoded names that have escapes
	var err error
	for {
		// at a byte that must open a member name; i < n
		if b[i] != '"' {
			return errUnexpected(b, i)
		}
		keyStart := i
		if i, err = scanString(b, i); err != nil {
			return err
		}
		keyEnd := i
		if i < n && b[i] == ':' { // fast path: no space before ':'
			i++
		} else {
			i = skipSpace(b, i)
			if i >= n {
				return errEOF(b)
			}
			if b[i] != ':' {
				return errUnexpected(b, i)
			}
			i++
		}
		i = skipSpace(b, i)
		if i >= n {
			return errEOF(b)
		}
		valueStart := i
		switch b[i] {
		case '"':
			i, err = scanString(b, i)
		case '{', '[':
			i, err = scanContainer(b, i)
		default:
			i, err = scanScalar(b, i)
		}
		if err != nil {
			return err
		}
		if fn != nil {
			k := b[keyStart+1 : keyEnd-1 : keyEnd-1]
			if bytes.IndexByte(k, '\\') >= 0 {
				scratch = appendUnescaped(scratch[:0], k)
				k = scratch
			}
			if err := fn(Member{Key: k, Value: b[valueStart:i:i], Start: keyStart, End: i}); err != nil {
				return err
			}
		}
		if i < n && b[i] <= ' ' {
			i = skipSpace(b, i)
		}
		if i >= n {
			return errEOF(b)
		}
		switch b[i] {
		case ',':
			if i = skipSpace(b, i+1); i >= n {
				return errEOF(b)
			}
		case '}':
			return trailing(b, i+1, "object")
		default:
			return errUnexpected(b, i)
		}
	}
}

// scanContainer validates the object or array that opens at b[i], a value
// of the outer object (depth 1), and returns the offset just after it. It
// is an iterative state machine with a fixed-size stack: it never
// recurses, and refuses nesting deeper than [MaxDepth].
func scanContainer(b []byte, i int) (int, error) {
	n := len(b)
	// stack holds one bit per open container below the current one:
	// bit d-1 is set when the container at depth d is an array. Depth 1,
	// the outer object, is walk's.
	var stack [MaxDepth / 64]uint64
	depth := 1
	inArray := false
	var err error
	var c byte

value: // at the first byte of a value; i < n
	c = b[i]
	switch {
	case c == '"':
		if i, err = scanString(b, i); err != nil {
			return 0, err
		}
	case c == '{' || c == '[':
		if depth == MaxDepth {
			return 0, errAt(i, "nesting deeper than "+strconv.Itoa(MaxDepth))
		}
		d := uint(depth) // index of the new container's bit
		depth++
		i++
		if c == '{' {
			stack[d/64&(MaxDepth/64-1)] &^= 1 << (d % 64)
			inArray = false
			goto objectStart
		}
		stack[d/64&(MaxDepth/64-1)] |= 1 << (d % 64)
		inArray = true
		i = skipSpace(b, i)
		if i >= n {
			return 0, errEOF(b)
		}
		if b[i] == ']' {
			i++
			goto closed
		}
		goto value
	default:
		if i, err = scanScalar(b, i); err != nil {
			return 0, err
		}
	}

afterValue: // just after a complete value inside the container at depth
	if i < n && b[i] <= ' ' {
		i = skipSpace(b, i)
	}
	if i >= n {
		return 0, errEOF(b)
	}
	c = b[i]
	if c == ',' {
		i = skipSpace(b, i+1)
		if i >= n {
			return 0, errEOF(b)
		}
		if inArray {
			goto value
		}
		goto key
	}
	if (inArray && c != ']') || (!inArray && c != '}') {
		return 0, errUnexpected(b, i)
	}
	i++

closed: // just after the '}' or ']' that closed the container at depth
	depth--
	if depth == 1 {
		return i, nil
	}
	{
		d := uint(depth - 1)
		inArray = stack[d/64&(MaxDepth/64-1)]>>(d%64)&1 != 0
	}
	goto afterValue

objectStart: // just after '{'
	i = skipSpace(b, i)
	if i >= n {
		return 0, errEOF(b)
	}
	if b[i] == '}' {
		i++
		goto closed
	}

key: // at a byte that must open a member name; i < n
	if b[i] != '"' {
		return 0, errUnexpected(b, i)
	}
	if i, err = scanString(b, i); err != nil {
		return 0, err
	}
	if i < n && b[i] == ':' { // fast path: no space before ':'
		i++
	} else {
		i = skipSpace(b, i)
		if i >= n {
			return 0, errEOF(b)
		}
		if b[i] != ':' {
			return 0, errUnexpected(b, i)
		}
		i++
	}
	i = skipSpace(b, i)
	if i >= n {
		return 0, errEOF(b)
	}
	goto value
}

// scanScalar validates the number, true, false or null at b[i] and returns
// the offset just after it; any other byte is unexpected there.
func scanScalar(b []byte, i int) (int, error) {
	switch c := b[i]; {
	case c == '-' || c-'0' <= 9:
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	}
	return 0, errUnexpected(b, i)
}

// HasNewline reports whether b contains '\n' or '\r', inside strings or
// not. (Raw newlines inside strings are invalid JSON anyway.)
func HasNewline(b []byte) bool {
	return bytes.IndexByte(b, '\n') >= 0 || bytes.IndexByte(b, '\r') >= 0
}

func skipSpace(b []byte, i int) int {
	for ; i < len(b); i++ {
		if c := b[i]; c > ' ' || (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
			return i
		}
	}
	return i
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// isStop reports whether c ends a run of plain string bytes: '"', '\\',
// a control character or any non-ASCII byte.
func isStop(c byte) bool {
	return c == '"' || c == '\\' || c < 0x20 || c >= 0x80
}

// stopMask returns a word with the high bit set in (at least) the lowest
// byte of x that is '"', '\\', < 0x20 or >= 0x80, and zero if none is.
// Bits above the lowest hit may be spurious (borrows), so callers use only
// the lowest set bit.
func stopMask(x uint64) uint64 {
	q := x ^ (lsb * '"')
	s := x ^ (lsb * '\\')
	return ((x - lsb*0x20) | x | ((q - lsb) &^ q) | ((s - lsb) &^ s)) & msb
}

// scanString validates the string whose opening quote is b[start] and
// returns the offset just after its closing quote.
func scanString(b []byte, start int) (int, error) {
	n := len(b)
	i := start + 1
	for {
		for i+8 <= n {
			x := binary.LittleEndian.Uint64(b[i:])
			if m := stopMask(x); m != 0 {
				tz := bits.TrailingZeros64(m)
				i += tz >> 3
				if byte(x>>(tz&^7)) == '"' { // the common case
					return i + 1, nil
				}
				goto stop
			}
			i += 8
		}
		for i < n && !isStop(b[i]) { // fewer than 8 bytes left
			i++
		}
		if i >= n {
			return 0, errUnterminated(start)
		}
	stop:
		switch c := b[i]; {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if i+1 >= n {
				return 0, errUnterminated(start)
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := i + 2; k < i+6; k++ {
					if k >= n {
						return 0, errUnterminated(start)
					}
					if !isHex(b[k]) {
						return 0, errAt(k, `invalid character `+quoteByte(b[k])+` in \u escape`)
					}
				}
				i += 6
			default:
				return 0, errEscape(b, i)
			}
		case c < 0x20:
			return 0, errAt(i, "control character "+hexByte(c)+" in string")
		default:
			size := runeLen(b[i:])
			if size == 0 {
				return 0, errAt(i, "invalid UTF-8 in string")
			}
			i += size
		}
	}
}

func isHex(c byte) bool {
	return c-'0' <= 9 || (c|0x20)-'a' <= 5
}

// runeLen returns the length of the valid UTF-8 sequence that starts
// with the non-ASCII byte p[0], or 0 if none does. It refuses exactly what
// unicode/utf8 refuses: stray continuation bytes, overlong forms,
// surrogates (U+D800–U+DFFF) and code points above U+10FFFF.
func runeLen(p []byte) int {
	c := p[0]
	lo, hi := byte(0x80), byte(0xBF) // range of the second byte
	var size int
	switch {
	case c < 0xC2: // continuation byte or overlong 2-byte lead
		return 0
	case c < 0xE0:
		size = 2
	case c < 0xF0:
		size = 3
		if c == 0xE0 {
			lo = 0xA0 // overlong
		} else if c == 0xED {
			hi = 0x9F // surrogates
		}
	case c < 0xF5:
		size = 4
		if c == 0xF0 {
			lo = 0x90 // overlong
		} else if c == 0xF4 {
			hi = 0x8F // > U+10FFFF
		}
	default:
		return 0
	}
	if len(p) < size || p[1] < lo || p[1] > hi {
		return 0
	}
	for _, t := range p[2:size] {
		if t&0xC0 != 0x80 {
			return 0
		}
	}
	return size
}

// scanNumber validates the number starting at b[i] ('-' or a digit) per
// the RFC 8259 grammar and returns the offset just after it. What follows
// the number is left to the caller.
func scanNumber(b []byte, i int) (int, error) {
	n := len(b)
	if b[i] == '-' {
		i++
		if i >= n {
			return 0, errEOF(b)
		}
	}
	switch c := b[i]; {
	case c == '0':
		i++
	case c-'1' <= 8:
		i++
		for i < n && b[i]-'0' <= 9 {
			i++
		}
	default:
		return 0, errUnexpected(b, i)
	}
	var err error
	if i < n && b[i] == '.' {
		if i, err = digits(b, i+1); err != nil {
			return 0, err
		}
	}
	if i < n && b[i]|0x20 == 'e' {
		i++
		if i < n && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i, err = digits(b, i); err != nil {
			return 0, err
		}
	}
	return i, nil
}

// digits requires at least one digit at b[i] and returns the offset after
// the run.
func digits(b []byte, i int) (int, error) {
	n := len(b)
	if i >= n {
		return 0, errEOF(b)
	}
	if b[i]-'0' > 9 {
		return 0, errUnexpected(b, i)
	}
	for i++; i < n && b[i]-'0' <= 9; i++ {
	}
	return i, nil
}

// scanLiteral checks that lit (true, false or null) starts at b[i], whose
// first byte the caller has matched.
func scanLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit), nil
	}
	for k := 1; k < len(lit); k++ {
		if i+k >= len(b) {
			return 0, errEOF(b)
		}
		if b[i+k] != lit[k] {
			return 0, errUnexpected(b, i+k)
		}
	}
	return i + len(lit), nil // unreachable
}
