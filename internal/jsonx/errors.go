package jsonx

import (
	"strconv"
)

// SyntaxError describes why [Object] refused its input.
//
// Offset is the byte offset of the offending byte: the unexpected
// character, the first byte of an invalid UTF-8 sequence, the backslash of
// an invalid escape, the bracket that nests too deep, or the first byte of
// trailing data. For "unterminated string" it is the offset of the string's
// opening quote, and for "unexpected end of input" it is len(input).
type SyntaxError struct {
	Offset int    // byte offset in the input, 0 ≤ Offset ≤ len(input)
	Msg    string // what is wrong, e.g. "unexpected character 'x'"
}

// Error returns "invalid JSON at byte <Offset>: <Msg>".
func (e *SyntaxError) Error() string {
	return "invalid JSON at byte " + strconv.Itoa(e.Offset) + ": " + e.Msg
}

// The constructors below run only on the error path; keeping them out of
// line keeps the scanner small.

//go:noinline
func errAt(off int, msg string) error { return &SyntaxError{Offset: off, Msg: msg} }

func errEOF(b []byte) error { return errAt(len(b), "unexpected end of input") }

func errUnexpected(b []byte, i int) error {
	return errAt(i, "unexpected character "+quoteByte(b[i]))
}

func errUnterminated(start int) error { return errAt(start, "unterminated string") }

func errEscape(b []byte, i int) error {
	// b[i] is the backslash and b[i+1] exists.
	c := b[i+1]
	if c >= 0x20 && c < 0x7f {
		return errAt(i, `invalid escape '\`+string(rune(c))+`'`)
	}
	return errAt(i, `invalid escape: '\' followed by byte `+hexByte(c))
}

// quoteByte formats c for a message: 'x' when printable ASCII, else 0xNN.
func quoteByte(c byte) string {
	switch {
	case c == '\'':
		return `'\''`
	case c >= 0x20 && c < 0x7f:
		return "'" + string(rune(c)) + "'"
	default:
		return hexByte(c)
	}
}

func hexByte(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{'0', 'x', digits[c>>4], digits[c&0xf]})
}
