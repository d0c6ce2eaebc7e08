package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

// expandEnv replaces ${NAME} in a config file with the environment
// variable NAME, and ${NAME:-default} with default when NAME is unset or
// empty; $${ stands for a literal ${. A reference to an unset variable
// without a default is an error naming its line, as is a malformed one.
// Expansion happens before YAML decoding, so a value may hold any part of
// a scalar; it must not add lines (a newline in a variable is an error),
// so that decoding errors keep pointing at the file's lines. Comments (a
// '#' at a line's start or after white space, outside quotes) are left
// alone.
func expandEnv(data []byte, lookup func(string) (string, bool)) ([]byte, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if !bytes.Contains(data, []byte("${")) {
		return data, nil
	}
	var out bytes.Buffer
	out.Grow(len(data))
	var errs []error
	line := 1
	comment := false   // in a comment: copied as is
	var quote byte = 0 // in a quoted scalar on this line
	for i := 0; i < len(data); {
		c := data[i]
		switch {
		case c == '\n':
			line++
			comment, quote = false, 0
		case comment:
		case quote != 0:
			if c == quote {
				quote = 0
			}
			if c == '\\' && quote == '"' && i+1 < len(data) && data[i+1] != '\n' {
				out.WriteByte(c)
				i++
				c = data[i]
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || data[i-1] == ' ' || data[i-1] == '\t' || data[i-1] == '\n'):
			comment = true
		}
		if comment || c == '\n' {
			out.WriteByte(c)
			i++
			continue
		}
		switch {
		case c == '$' && bytes.HasPrefix(data[i:], []byte("$${")):
			out.WriteString("${")
			i += 3
			continue
		case c == '$' && bytes.HasPrefix(data[i:], []byte("${")):
			end := bytes.IndexByte(data[i:], '}')
			nl := bytes.IndexByte(data[i:], '\n')
			if end < 0 || (nl >= 0 && nl < end) {
				errs = append(errs, fmt.Errorf("line %d: unterminated ${", line))
				i += 2
				continue
			}
			ref := string(data[i+2 : i+end])
			name, def, hasDef := cutDefault(ref)
			if !validEnvName(name) {
				errs = append(errs, fmt.Errorf("line %d: ${%s}: want ${NAME} or ${NAME:-default}, NAME of [A-Za-z_][A-Za-z0-9_]*", line, ref))
			} else if v, ok := lookup(name); ok && v != "" {
				if bytes.ContainsAny([]byte(v), "\r\n") {
					errs = append(errs, fmt.Errorf("line %d: ${%s} holds a newline", line, name))
				}
				out.WriteString(v)
			} else if hasDef {
				out.WriteString(def)
			} else {
				errs = append(errs, fmt.Errorf("line %d: ${%s}: environment variable not set (use ${%s:-default} for a default)", line, name, name))
			}
			i += end + 1
			continue
		}
		out.WriteByte(c)
		i++
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out.Bytes(), nil
}

func cutDefault(ref string) (name, def string, ok bool) {
	for i := 0; i+1 < len(ref); i++ {
		if ref[i] == ':' && ref[i+1] == '-' {
			return ref[:i], ref[i+2:], true
		}
	}
	return ref, "", false
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range []byte(s) {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
