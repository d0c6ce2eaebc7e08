package jsonx

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestObjectValid(t *testing.T) {
	for _, in := range []string{
		`{}`,
		` {} `,
		"\t\r\n{\n}\r\n\t ",
		`{"a":1}`,
		`{ "a" : 1 , "b" : [ 1 , 2 ] }`,
		`{"a":[]}`,
		`{"a":[[]],"b":{"c":{}}}`,
		`{"a":[1,-0,0.5,-0.5e+10,1E9,1e-9,123456789012345678901234567890,true,false,null,"x",{},[]]}`,
		`{"a":"\"\\\/\b\f\n\r\t\u00e9\u00E9\uD800\udfff"}`,
		`{"日本":"語 🎉 é","x":"` + "\u007f\u0080\u07ff\u0800\uffff\U00010000\U0010ffff" + `"}`,
		`{"":""}`,
		`{"a":"` + strings.Repeat("0123456789", 20) + `"}`,
		`{"a":"` + strings.Repeat("é", 20) + `"}`,
		`{"dup":1,"dup":2}`,
		strings.Repeat(`{"a":`, MaxDepth-1) + "{}" + strings.Repeat("}", MaxDepth-1),
		`{"a":` + strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1) + "}",
	} {
		if err := Object([]byte(in)); err != nil {
			t.Errorf("Object(%.60q) = %v, want nil", in, err)
		}
		if !oracle([]byte(in)) {
			t.Errorf("oracle disagrees on valid %.60q", in)
		}
	}
}

func TestObjectErrors(t *testing.T) {
	deep := `{"a":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + "}"
	for _, tc := range []struct {
		in   string
		off  int
		want string
	}{
		{"", 0, "unexpected end of input"},
		{"  \n", 3, "unexpected end of input"},
		{`{`, 1, "unexpected end of input"},
		{`{"a"`, 4, "unexpected end of input"},
		{`{"a":`, 5, "unexpected end of input"},
		{`{"a":1`, 6, "unexpected end of input"},
		{`{"a":1,`, 7, "unexpected end of input"},
		{`{"a":[`, 6, "unexpected end of input"},
		{`{"a":-`, 6, "unexpected end of input"},
		{`{"a":1.`, 7, "unexpected end of input"},
		{`{"a":1e`, 7, "unexpected end of input"},
		{`{"a":1e-`, 8, "unexpected end of input"},
		{`{"a":nul`, 8, "unexpected end of input"},
		{`{"a":{}`, 7, "unexpected end of input"},

		{`[1]`, 0, "not an object: starts with '['"},
		{` x`, 1, "not an object: starts with 'x'"},
		{`"{}"`, 0, `not an object: starts with '"'`},
		{"\xef\xbb\xbf{}", 0, "not an object: starts with 0xef"},
		{"\x00{}", 0, "not an object: starts with 0x00"},

		{`{x}`, 1, "unexpected character 'x'"},
		{`{,}`, 1, "unexpected character ','"},
		{`{'a':1}`, 1, `unexpected character '\''`},
		{`{"a" 1}`, 5, "unexpected character '1'"},
		{`{"a"::1}`, 5, "unexpected character ':'"},
		{`{"a":1,}`, 7, "unexpected character '}'"},
		{`{"a":1]`, 6, "unexpected character ']'"},
		{`{"a":[1}`, 7, "unexpected character '}'"},
		{`{"a":[,]}`, 6, "unexpected character ','"},
		{`{"a":[1,]}`, 8, "unexpected character ']'"},
		{`{"a":1 2}`, 7, "unexpected character '2'"},
		{`{"a":x}`, 5, "unexpected character 'x'"},
		{`{"a":01}`, 6, "unexpected character '1'"},
		{`{"a":-}`, 6, "unexpected character '}'"},
		{`{"a":-a}`, 6, "unexpected character 'a'"},
		{`{"a":1.}`, 7, "unexpected character '}'"},
		{`{"a":1.e5}`, 7, "unexpected character 'e'"},
		{`{"a":1e}`, 7, "unexpected character '}'"},
		{`{"a":1e+}`, 8, "unexpected character '}'"},
		{`{"a":.5}`, 5, "unexpected character '.'"},
		{`{"a":+1}`, 5, "unexpected character '+'"},
		{`{"a":tru}`, 8, "unexpected character '}'"},
		{`{"a":t rue}`, 6, "unexpected character ' '"},
		{`{"a":True}`, 5, "unexpected character 'T'"},
		{`{"a":nulll}`, 9, "unexpected character 'l'"},
		{"{\"a\":1\x00}", 6, "unexpected character 0x00"},
		{"{\"a\":\xc3\xa9}", 5, "unexpected character 0xc3"},

		{`{"a":"`, 5, "unterminated string"},
		{`{"abc`, 1, "unterminated string"},
		{`{"a":"0123456789abcdef`, 5, "unterminated string"},
		{`{"a":"\`, 5, "unterminated string"},
		{`{"a":"\u12`, 5, "unterminated string"},

		{`{"a":"\q"}`, 6, `invalid escape '\q'`},
		{`{"a":"\U0041"}`, 6, `invalid escape '\U'`},
		{`{"a":"\'"}`, 6, `invalid escape '\''`},
		{"{\"a\":\"\\\x01\"}", 6, `invalid escape: '\' followed by byte 0x01`},
		{"{\"a\":\"\\\xc3\xa9\"}", 6, `invalid escape: '\' followed by byte 0xc3`},
		{`{"a":"\u12g4"}`, 10, `invalid character 'g' in \u escape`},
		{`{"a":"\u"}`, 8, `invalid character '"' in \u escape`},

		{"{\"a\":\"x\ny\"}", 7, "control character 0x0a in string"},
		{"{\"a\":\"\x00\"}", 6, "control character 0x00 in string"},
		{"{\"a\":\"0123456789abcdef\x1f\"}", 22, "control character 0x1f in string"},
		{"{\"a\":\"\t\"}", 6, "control character 0x09 in string"},

		{"{\"a\":\"\xff\"}", 6, "invalid UTF-8 in string"},
		{"{\"a\":\"\x80\"}", 6, "invalid UTF-8 in string"},
		{"{\"a\":\"\xc0\xaf\"}", 6, "invalid UTF-8 in string"},              // overlong '/'
		{"{\"a\":\"\xc1\xbf\"}", 6, "invalid UTF-8 in string"},              // overlong
		{"{\"a\":\"\xe0\x80\xaf\"}", 6, "invalid UTF-8 in string"},          // overlong
		{"{\"a\":\"\xf0\x80\x80\xaf\"}", 6, "invalid UTF-8 in string"},      // overlong
		{"{\"a\":\"\xed\xa0\x80\"}", 6, "invalid UTF-8 in string"},          // U+D800
		{"{\"a\":\"\xed\xbf\xbf\"}", 6, "invalid UTF-8 in string"},          // U+DFFF
		{"{\"a\":\"\xf4\x90\x80\x80\"}", 6, "invalid UTF-8 in string"},      // U+110000
		{"{\"a\":\"\xf5\x80\x80\x80\"}", 6, "invalid UTF-8 in string"},      // bad lead
		{"{\"a\":\"\xe2\x82\"}", 6, "invalid UTF-8 in string"},              // truncated
		{"{\"a\":\"\xe2\x82", 6, "invalid UTF-8 in string"},                 // truncated at end
		{"{\"a\":\"\xc3\xa9\xa9\"}", 8, "invalid UTF-8 in string"},          // stray continuation
		{"{\"a\":\"0123456789abcdef\x80\"}", 22, "invalid UTF-8 in string"}, // found by SWAR
		{"{\"\xff\":1}", 2, "invalid UTF-8 in string"},                      // in a key

		{deep, 5 + MaxDepth - 1, "nesting deeper than 512"},
		{strings.Repeat(`{"a":`, MaxDepth) + "{}", 5*(MaxDepth-1) + 5, "nesting deeper than 512"},

		{`{} x`, 3, "trailing data after object"},
		{`{}{}`, 2, "trailing data after object"},
		{`{"a":1}]`, 7, "trailing data after object"},
		{"{}\n{}\n", 3, "trailing data after object"},
		{"{}\x00", 2, "trailing data after object"},
	} {
		err := Object([]byte(tc.in))
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Object(%.70q) = %v, want *SyntaxError", tc.in, err)
			continue
		}
		if se.Offset != tc.off || se.Msg != tc.want {
			t.Errorf("Object(%.70q) = %d %q, want %d %q", tc.in, se.Offset, se.Msg, tc.off, tc.want)
		}
		if oracle([]byte(tc.in)) {
			t.Errorf("oracle accepts %.70q", tc.in)
		}
	}
}

func TestSyntaxErrorMessage(t *testing.T) {
	err := Object([]byte(`{"a":x}`))
	const want = "invalid JSON at byte 5: unexpected character 'x'"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestHasNewline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"", false},
		{`{"a":1}`, false},
		{"{\"a\":1}\n", true},
		{"\r{}", true},
		{`{"a":"x\ny"}`, false}, // an escape, not a newline
		{"{\"a\":\"x\ny\"}", true},
		{strings.Repeat("x", 1000) + "\r", true},
	} {
		if got := HasNewline([]byte(tc.in)); got != tc.want {
			t.Errorf("HasNewline(%.40q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// sampleEvents returns the committed real events in testdata.
func sampleEvents(tb testing.TB) [][]byte {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.ndjson"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no testdata samples: %v", err)
	}
	var events [][]byte
	for _, f := range files {
		events = append(events, readLines(tb, f, 0)...)
	}
	return events
}

// readLines returns up to max (0 = all) non-empty lines of file.
func readLines(tb testing.TB, file string, max int) [][]byte {
	tb.Helper()
	f, err := os.Open(file)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var lines [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() && (max == 0 || len(lines) < max) {
		if len(sc.Bytes()) > 0 {
			lines = append(lines, bytes.Clone(sc.Bytes()))
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return lines
}

func TestSampleEvents(t *testing.T) {
	for i, ev := range sampleEvents(t) {
		// The samples hold real IPs and user agents: report indexes, not bytes.
		if err := Object(ev); err != nil {
			t.Errorf("event %d: %v", i, err)
		}
		if HasNewline(ev) {
			t.Errorf("event %d: HasNewline = true", i)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	events := sampleEvents(t)
	allocs := testing.AllocsPerRun(100, func() {
		for _, ev := range events {
			if Object(ev) != nil {
				panic("invalid sample")
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("Object allocates %v times per run on valid input", allocs)
	}
}

// TestMutations compares Object with the encoding/json oracle on every
// truncation and on single-byte substitutions at every offset of a few
// real events.
func TestMutations(t *testing.T) {
	events := sampleEvents(t)
	subst := []byte{'"', '\\', '{', '}', '[', ']', ',', ':', '0', '-', '.', 'e', 'u', 'x', ' ', '\n', 0x00, 0x1f, 0x7f, 0x80, 0xc3, 0xed, 0xff}
	for _, ev := range []([]byte){events[0], events[len(events)-1]} {
		for i := 0; i <= len(ev); i++ {
			check(t, ev[:i])
		}
		m := bytes.Clone(ev)
		for i := range m {
			for _, c := range subst {
				m[i] = c
				check(t, m)
			}
			m[i] = ev[i]
		}
	}
}

// check fails t if Object and oracle disagree on b, or if a returned
// error is malformed.
func check(t testing.TB, b []byte) {
	t.Helper()
	err := Object(b)
	want := oracle(b)
	// Report sizes, not bytes: inputs may be mutated real events (PII-like).
	if (err == nil) != want {
		t.Fatalf("Object(%d-byte input) = %v, oracle says valid=%v", len(b), err, want)
	}
	if err != nil {
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Fatalf("Object(%d-byte input) returned %T, want *SyntaxError", len(b), err)
		}
		if se.Offset < 0 || se.Offset > len(b) || se.Msg == "" {
			t.Fatalf("Object(%d-byte input) = %+v: offset out of range or empty message", len(b), se)
		}
	}
}

// oracle is the reference definition of Object built from the standard
// library: valid JSON, valid UTF-8, an object, nested at most MaxDepth.
func oracle(b []byte) bool {
	if !json.Valid(b) || !utf8.Valid(b) {
		return false
	}
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && t[0] == '{' && maxDepth(b) <= MaxDepth
}

// maxDepth returns the deepest nesting of b, which must be valid JSON.
func maxDepth(b []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString:
			escaped = c == '\\'
			inString = c != '"'
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}
