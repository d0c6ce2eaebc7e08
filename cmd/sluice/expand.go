package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// envRefs stands in for the environment references of a config file's
// text while YAML parses it. A reference holds '{' and '}', which end a
// plain scalar in a flow collection ({key: ${KEY}, source: web}), so each
// well-formed one is replaced by a token of letters, digits and '_' that
// reads the same in every YAML context, and restored in the parsed values
// (restore) before they are expanded. Comments, quotes and lines are left
// as they were: a token in a comment goes with the comment.
type envRefs struct {
	prefix string   // of every token, found nowhere in the file
	refs   []string // token i stands for refs[i], "${…}"
}

// protectEnvRefs returns data with each ${NAME} and ${NAME:-default} on one
// line replaced by a token ($${ is left alone), and the references.
func protectEnvRefs(data []byte) ([]byte, *envRefs) {
	if !bytes.Contains(data, []byte("${")) {
		return data, nil
	}
	e := &envRefs{}
	for {
		var nonce [6]byte
		rand.Read(nonce[:])
		e.prefix = fmt.Sprintf("_sluice_env_%x_", nonce)
		if !bytes.Contains(data, []byte(e.prefix)) {
			break
		}
	}
	var out bytes.Buffer
	out.Grow(len(data))
	stop := -1 // the first '}' or newline at or after some i+2, or len(data): one scan for a line of "${${${"
	for i := 0; i < len(data); {
		if bytes.HasPrefix(data[i:], []byte("$${")) {
			out.WriteString("$${")
			i += 3
			continue
		}
		if bytes.HasPrefix(data[i:], []byte("${")) {
			if stop < i+2 {
				stop = len(data)
				if j := bytes.IndexAny(data[i+2:], "}\n"); j >= 0 {
					stop = i + 2 + j
				}
			}
			if stop < len(data) && data[stop] == '}' {
				name, _, _ := strings.Cut(string(data[i+2:stop]), ":-")
				if validEnvName(name) {
					fmt.Fprintf(&out, "%s%d_", e.prefix, len(e.refs))
					e.refs = append(e.refs, string(data[i:stop+1]))
					i = stop + 1
					continue
				}
			}
		}
		out.WriteByte(data[i])
		i++
	}
	return out.Bytes(), e
}

// restore puts back the references in a parsed scalar's value.
func (e *envRefs) restore(s string) string {
	if e == nil || !strings.Contains(s, e.prefix) {
		return s
	}
	var out strings.Builder
	for {
		i := strings.Index(s, e.prefix)
		if i < 0 {
			out.WriteString(s)
			return out.String()
		}
		out.WriteString(s[:i])
		s = s[i+len(e.prefix):]
		j := strings.IndexByte(s, '_')
		n, err := strconv.Atoi(s[:max(j, 0)])
		if j < 0 || err != nil || n < 0 || n >= len(e.refs) {
			out.WriteString(e.prefix) // cannot be: the prefix is nowhere else
			continue
		}
		out.WriteString(e.refs[n])
		s = s[j+1:]
	}
}

// expandEnvTree replaces ${NAME} in the scalar values of a parsed config
// with the environment variable NAME, and ${NAME:-default} with default
// when NAME is unset or empty; $${ stands for a literal ${. Expansion
// works on values the YAML parser has already read, as the OpenTelemetry
// Collector's confmap does, never on the file's text: a variable's value
// is a literal string that is never parsed as YAML, so a secret holding
// '#', ': ', '&x', '!!binary', quotes or a newline arrives byte for byte
// and cannot add or change keys. A value is not expanded again.
//
// A plain (unquoted) value that was only a reference still decodes into a
// number, boolean or duration field (max_events: ${MAX}); into a string
// field it is the variable's text, whatever it looks like ("0123",
// "null", "true"). Keys and comments are never expanded. Each reference
// to an unset variable without a default, and each malformed one, is an
// error naming its line and key; errors never show a value. refs are the
// references protectEnvRefs took out of the text, if any.
func expandEnvTree(root *yaml.Node, refs *envRefs, lookup func(string) (string, bool), errs *lineErrors) {
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				k.Value = refs.restore(k.Value)
				if strings.Contains(k.Value, "${") {
					errs.add(k.Line, "%s: ${…} in a key: environment variables are expanded in values only", joinKey(path, k.Value))
				}
				walk(v, joinKey(path, k.Value))
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		case yaml.ScalarNode:
			n.Value = refs.restore(n.Value)
			expandScalar(n, path, lookup, errs)
		}
		// An alias shares its anchor's node, expanded where it stands.
	}
	walk(root, "")
}

// expandScalar expands the references in n's value.
func expandScalar(n *yaml.Node, path string, lookup func(string) (string, bool), errs *lineErrors) {
	if !strings.Contains(n.Value, "${") {
		return
	}
	v, refs, ok := expandEnv(n.Value, lookup, func(offset int, format string, args ...any) {
		line := n.Line
		if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			// A block scalar starts on the line after its indicator,
			// one value line a file line.
			line += 1 + strings.Count(n.Value[:offset], "\n")
		}
		if path == "" {
			path = "the config"
		}
		errs.add(line, "%s: %s", path, fmt.Sprintf(format, args...))
	})
	if !ok {
		return
	}
	n.Value = v
	if refs == 0 || n.Style != 0 {
		// Only $${ (or a quoted, block or explicitly tagged scalar): the
		// tag the parser gave it stands.
		return
	}
	// A plain scalar: resolve the tag from the value, as for a plain
	// scalar written in the file (so ${MAX} can fill an integer), except
	// that a value is never null unless it is empty: "null" and "~" are
	// the strings a string field then receives byte for byte.
	n.Tag = ""
	switch v {
	case "~", "null", "Null", "NULL":
		n.Tag = "!!str"
	}
}

// expandEnv expands the references in one value and returns it with how
// many references it replaced. On a bad reference it calls fail with the
// reference's byte offset in s and returns false.
func expandEnv(s string, lookup func(string) (string, bool), fail func(offset int, format string, args ...any)) (string, int, bool) {
	var out strings.Builder
	out.Grow(len(s))
	refs, ok := 0, true
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			out.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i:], '}')
			if end < 0 || strings.IndexByte(s[i:i+end], '\n') >= 0 {
				fail(i, "unterminated ${ (want ${NAME} or ${NAME:-default}; $${ is a literal ${)")
				return "", 0, false
			}
			ref := s[i+2 : i+end]
			name, def, hasDef := strings.Cut(ref, ":-")
			switch v, set := lookup(name); {
			case !validEnvName(name):
				fail(i, "${%s}: want ${NAME} or ${NAME:-default}, NAME of [A-Za-z_][A-Za-z0-9_]*", ref)
				ok = false
			case set && v != "":
				out.WriteString(v)
			case hasDef:
				out.WriteString(def)
			default:
				fail(i, "${%s}: environment variable not set (use ${%s:-default} for a default)", name, name)
				ok = false
			}
			refs++
			i += end + 1
		default:
			out.WriteByte(s[i])
			i++
		}
	}
	return out.String(), refs, ok
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

// joinKey appends key to the key path prefix.
func joinKey(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}
