package jsonx

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// Unquote returns the contents of the JSON string s, which must be exactly
// one string, quotes included, with no white space around. Escapes are
// decoded as encoding/json decodes them, an escaped lone surrogate (such as
// "\ud800") becoming U+FFFD. When s has no escape the result aliases s and
// Unquote does not allocate; otherwise the result is a new slice.
//
// Unquote returns a *[SyntaxError] when s is not a valid string under the
// rules of [Object] (escapes, control characters, UTF-8) or has anything
// after its closing quote.
func Unquote(s []byte) ([]byte, error) {
	if err := checkString(s); err != nil {
		return nil, err
	}
	body := s[1 : len(s)-1 : len(s)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return body, nil
	}
	return appendUnescaped(make([]byte, 0, len(body)), body), nil
}

// AppendUnquote is like [Unquote] but appends the contents to dst and
// returns the extended buffer, so that a caller can reuse a buffer.
func AppendUnquote(dst, s []byte) ([]byte, error) {
	if err := checkString(s); err != nil {
		return dst, err
	}
	return appendUnescaped(dst, s[1:len(s)-1]), nil
}

// checkString reports whether s is exactly one valid JSON string.
func checkString(s []byte) error {
	if len(s) == 0 {
		return errEOF(s)
	}
	if s[0] != '"' {
		return errAt(0, "not a string: starts with "+quoteByte(s[0]))
	}
	end, err := scanString(s, 0)
	if err != nil {
		return err
	}
	if end < len(s) {
		return errAt(end, "trailing data after string")
	}
	return nil
}

// appendUnescaped appends the string body s (between the quotes, already
// validated by scanString) with its escapes decoded.
func appendUnescaped(dst, s []byte) []byte {
	for {
		i := bytes.IndexByte(s, '\\')
		if i < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:i]...)
		c := s[i+1]
		s = s[i+2:]
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s)
			s = s[4:]
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if len(s) >= 6 && s[0] == '\\' && s[1] == 'u' {
					r2 = hex4(s[2:])
				}
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r = d
					s = s[6:]
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
	}
}

// hex4 decodes the four hex digits at the start of s, which scanString
// checked.
func hex4(s []byte) rune {
	var r rune
	for _, c := range s[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// AppendQuote appends s to dst as a JSON string, quotes included, and
// returns the extended buffer. It escapes exactly what ECMAScript's
// JSON.stringify escapes: '"' and '\\', the control characters \b \f \n \r
// \t by name and the others as \u00xx (lowercase hex); everything else,
// '/', DEL, U+2028 and U+2029 included, is copied as is. So a string that a
// JavaScript SDK sent is quoted byte for byte as the SDK would have quoted
// it. Each byte of s that is not part of valid UTF-8 becomes U+FFFD.
func AppendQuote(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			if r, size := utf8.DecodeRune(s[i:]); r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendCompact appends src to dst without its insignificant white space
// (space, tab, newline and carriage return outside strings) and returns the
// extended buffer. Strings are copied as they are, escapes included, so
// compacting valid JSON gives what encoding/json.Compact gives. dst may be
// src[:0] to compact in place.
//
// AppendCompact does not validate: on invalid JSON it still returns (the
// input minus white space outside what looks like strings) without error,
// so validate first, with [Object] for instance.
func AppendCompact(dst, src []byte) []byte {
	start := 0 // src[start:i] is pending copy
	for i := 0; i < len(src); {
		switch src[i] {
		case '"':
			j, err := skipString(src, i)
			if err != nil {
				j = len(src)
			}
			i = j
		case ' ', '\t', '\n', '\r':
			dst = append(dst, src[start:i]...)
			i++
			for i < len(src) && isSpace(src[i]) {
				i++
			}
			start = i
		default:
			i++
		}
	}
	return append(dst, src[start:]...)
}
