package jsonx

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// Elements calls fn for each element of the JSON array b, in order, with
// the element's 0-based index and its raw bytes without surrounding white
// space.
//
// Elements checks only the array's structure: b must be '[' … ']' with
// optional white space around, every string must be terminated and every
// bracket closed, so that the end of each element is known: the first ','
// or ']' outside strings and nested containers. It does not validate the
// elements themselves, so that a caller can refuse a bad element alone and
// keep its neighbours: raw may be invalid JSON, or empty (between the
// commas of "[1,,2]" or after the last comma of "[1,]"). Validate each raw
// with [Object] (or json.Valid). When b is valid JSON, the raws are exactly
// the array's elements; "[]" and "[ ]" have none.
//
// raw aliases b, with its capacity cut to its length so that appending to
// it cannot overwrite b. An error returned by fn stops the scan and is
// returned as is; any other error is a *[SyntaxError] with an offset in b.
// Elements does not allocate; it does not retain b.
func Elements(b []byte, fn func(i int, raw []byte) error) error {
	n := len(b)
	i := skipSpace(b, 0)
	if i >= n {
		return errEOF(b)
	}
	if b[i] != '[' {
		return errAt(i, "not an array: starts with "+quoteByte(b[i]))
	}
	i = skipSpace(b, i+1)
	if i < n && b[i] == ']' {
		return trailing(b, i+1, "array")
	}
	for k := 0; ; k++ {
		end, err := spanEnd(b, i)
		if err != nil {
			return err
		}
		if err := fn(k, trimmed(b, i, end)); err != nil {
			return err
		}
		switch b[end] {
		case ',':
			i = skipSpace(b, end+1)
			if i >= n {
				return errEOF(b)
			}
		case ']':
			return trailing(b, end+1, "array")
		default: // '}'
			return errUnexpected(b, end)
		}
	}
}

// Member is one name/value pair of a JSON object, as found by [Members].
type Member struct {
	// Key is the member's name with its escapes decoded. It aliases the
	// object when the name has no escape; otherwise it is valid only
	// during the call.
	Key []byte
	// Value is the raw value without surrounding white space. It aliases
	// the object, capacity cut to length. Like an element of [Elements], it
	// may be invalid JSON or empty.
	Value []byte
	// Start and End locate the member: obj[Start:End] runs from the
	// opening quote of the name to the last byte of the value.
	Start, End int
}

// Members calls fn for each member of the JSON object obj, in order of
// appearance, duplicates included.
//
// Like [Elements], Members checks the structure, not the values: obj must
// be '{' … '}' with optional white space around, each member a name, ':'
// and a value that ends at the first ',' or '}' outside strings and nested
// containers. Names must be valid JSON strings (the rules of [Object]);
// values are not validated and may be empty, as in {"a":}. When obj is
// valid JSON, the members are exactly the object's.
//
// An error returned by fn stops the scan and is returned as is; any other
// error is a *[SyntaxError] with an offset in obj. Members allocates only
// for a name that has an escape; it does not retain obj.
func Members(obj []byte, fn func(m Member) error) error {
	b := obj
	n := len(b)
	i := skipSpace(b, 0)
	if i >= n {
		return errEOF(b)
	}
	if b[i] != '{' {
		return errAt(i, "not an object: starts with "+quoteByte(b[i]))
	}
	i = skipSpace(b, i+1)
	if i < n && b[i] == '}' {
		return trailing(b, i+1, "object")
	}
	var scratch []byte // decoded names that have escapes
	var err error
	for {
		if i >= n {
			return errEOF(b)
		}
		if b[i] != '"' {
			return errUnexpected(b, i)
		}
		start := i
		if i, err = scanString(b, i); err != nil {
			return err
		}
		key := b[start+1 : i-1 : i-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			scratch = appendUnescaped(scratch[:0], key)
			key = scratch
		}
		i = skipSpace(b, i)
		if i >= n {
			return errEOF(b)
		}
		if b[i] != ':' {
			return errUnexpected(b, i)
		}
		i = skipSpace(b, i+1)
		var end int
		if end, err = spanEnd(b, i); err != nil {
			return err
		}
		value := trimmed(b, i, end)
		if err := fn(Member{Key: key, Value: value, Start: start, End: i + len(value)}); err != nil {
			return err
		}
		switch b[end] {
		case ',':
			i = skipSpace(b, end+1)
		case '}':
			return trailing(b, end+1, "object")
		default: // ']'
			return errUnexpected(b, end)
		}
	}
}

// trimmed returns b[i:end] without trailing white space (i is already past
// any leading white space), capacity cut.
func trimmed(b []byte, i, end int) []byte {
	for end > i && isSpace(b[end-1]) {
		end--
	}
	return b[i:end:end]
}

// trailing reports whether only white space follows offset i.
func trailing(b []byte, i int, what string) error {
	if i = skipSpace(b, i); i < len(b) {
		return errAt(i, "trailing data after "+what)
	}
	return nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// structural marks the bytes spanEnd must look at.
var structural = [256]bool{'"': true, '{': true, '[': true, '}': true, ']': true, ',': true}

// spanEnd returns the offset of the first ',', '}' or ']' at or after i
// that is outside strings and nested containers. Brackets are only
// counted, not matched: "{]" balances. It fails if the input ends first
// or a string is not terminated.
func spanEnd(b []byte, i int) (int, error) {
	depth := 0
	n := len(b)
	for ; i < n; i++ {
		c := b[i]
		if !structural[c] {
			continue
		}
		switch c {
		case '"': // skip the string, as skipString does, inlined
			start := i
			i++
			for {
				for i+8 <= n {
					if m := quoteMask(binary.LittleEndian.Uint64(b[i:])); m != 0 {
						i += bits.TrailingZeros64(m) >> 3
						goto stop
					}
					i += 8
				}
				for i < n && b[i] != '"' && b[i] != '\\' {
					i++
				}
				if i >= n {
					return 0, errUnterminated(start)
				}
			stop:
				if b[i] == '"' {
					break // i is at the closing quote
				}
				if i += 2; i > n {
					return 0, errUnterminated(start)
				}
			}
		case '{', '[':
			depth++
		case ',':
			if depth == 0 {
				return i, nil
			}
		default: // '}', ']'
			if depth == 0 {
				return i, nil
			}
			depth--
		}
	}
	return 0, errEOF(b)
}

// quoteMask returns a word with the high bit set in (at least) the lowest
// byte of x that is '"' or '\\', and zero if none is. Bits above the
// lowest hit may be spurious.
func quoteMask(x uint64) uint64 {
	q := x ^ (lsb * '"')
	s := x ^ (lsb * '\\')
	return (((q - lsb) &^ q) | ((s - lsb) &^ s)) & msb
}

// skipString returns the offset just after the string whose opening quote
// is b[start], skipping escapes without checking them.
func skipString(b []byte, start int) (int, error) {
	n := len(b)
	i := start + 1
	for {
		for i+8 <= n {
			if m := quoteMask(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				goto stop
			}
			i += 8
		}
		for i < n && b[i] != '"' && b[i] != '\\' {
			i++
		}
		if i >= n {
			return 0, errUnterminated(start)
		}
	stop:
		if b[i] == '"' {
			return i + 1, nil
		}
		if i += 2; i > n { // a backslash and the byte it escapes
			return 0, errUnterminated(start)
		}
	}
}
