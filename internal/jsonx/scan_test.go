package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// elements collects what Elements passes to its callback.
func elements(b []byte) ([]string, error) {
	var out []string
	err := Elements(b, func(i int, raw []byte) error {
		if i != len(out) {
			return errors.New("index out of order")
		}
		if cap(raw) != len(raw) {
			return errors.New("raw has spare capacity")
		}
		out = append(out, string(raw))
		return nil
	})
	return out, err
}

func TestElements(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`[]`, nil},
		{" [ \n ] \n", nil},
		{`[1]`, []string{`1`}},
		{`[{"a":1},{"b":[1,2]}]`, []string{`{"a":1}`, `{"b":[1,2]}`}},
		{"[ {\"a\" : 1} ,\n\t{ } ]", []string{`{"a" : 1}`, `{ }`}},
		{`["a,b","c]d","e\"]","f\\",{"g":"}"}]`, []string{`"a,b"`, `"c]d"`, `"e\"]"`, `"f\\"`, `{"g":"}"}`}},
		{`[[1,[2,3]],{"a":{"b":[{}]}},null,true,-1.5e3]`, []string{`[1,[2,3]]`, `{"a":{"b":[{}]}}`, `null`, `true`, `-1.5e3`}},
		// Structure only: bad elements are passed on for the caller to refuse.
		{`[1,,2]`, []string{`1`, ``, `2`}},
		{`[1,]`, []string{`1`, ``}},
		{`[,]`, []string{``, ``}},
		{`[{"a":tru},{"b" 1},x y,{}{}]`, []string{`{"a":tru}`, `{"b" 1}`, `x y`, `{}{}`}},
		{`[{"a":[}],[{]]]`, []string{`{"a":[}]`, `[{]]`}}, // brackets are counted, not matched
		{"[\"\xff\",\"\\q\"]", []string{"\"\xff\"", `"\q"`}},
	} {
		got, err := elements([]byte(tc.in))
		if err != nil {
			t.Errorf("Elements(%q): %v", tc.in, err)
			continue
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("Elements(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestElementsErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		off  int
		want string
	}{
		{``, 0, "unexpected end of input"},
		{` `, 1, "unexpected end of input"},
		{`{}`, 0, "not an array: starts with '{'"},
		{` "x"`, 1, `not an array: starts with '"'`},
		{"\xef\xbb\xbf[]", 0, "not an array: starts with 0xef"},
		{`[`, 1, "unexpected end of input"},
		{`[1`, 2, "unexpected end of input"},
		{`[1,`, 3, "unexpected end of input"},
		{`[{"a":1}`, 8, "unexpected end of input"},
		{`[{"a":[1}]`, 10, "unexpected end of input"},
		{`["abc]`, 1, "unterminated string"},
		{`["abc\"]`, 1, "unterminated string"},
		{`["abc\`, 1, "unterminated string"},
		{`[1}`, 2, "unexpected character '}'"},
		{`[1]]`, 3, "trailing data after array"},
		{`[] x`, 3, "trailing data after array"},
		{"[1]\n[2]", 4, "trailing data after array"},
	} {
		_, err := elements([]byte(tc.in))
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Elements(%q) = %v, want *SyntaxError", tc.in, err)
			continue
		}
		if se.Offset != tc.off || se.Msg != tc.want {
			t.Errorf("Elements(%q) = %d %q, want %d %q", tc.in, se.Offset, se.Msg, tc.off, tc.want)
		}
	}
}

func TestElementsStops(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := Elements([]byte(`[1,2,3]`), func(i int, raw []byte) error {
		n++
		if i == 1 {
			return stop
		}
		return nil
	})
	if err != stop || n != 2 {
		t.Fatalf("got %v after %d calls, want stop after 2", err, n)
	}
}

type member struct{ key, value, span string }

func members(b []byte) ([]member, error) {
	var out []member
	err := Members(b, func(m Member) error {
		if cap(m.Value) != len(m.Value) {
			return errors.New("value has spare capacity")
		}
		out = append(out, member{string(m.Key), string(m.Value), string(b[m.Start:m.End])})
		return nil
	})
	return out, err
}

func TestMembers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []member
	}{
		{`{}`, nil},
		{" { \n } \n", nil},
		{`{"a":1}`, []member{{"a", "1", `"a":1`}}},
		{"{ \"a\" :\n 1 , \"b\":[1,{\"c\":\"}\"}] }", []member{{"a", "1", "\"a\" :\n 1"}, {"b", `[1,{"c":"}"}]`, `"b":[1,{"c":"}"}]`}}},
		{`{"a":1,"a":2}`, []member{{"a", "1", `"a":1`}, {"a", "2", `"a":2`}}},
		{`{"":""}`, []member{{"", `""`, `"":""`}}},
		{`{"write\u004bey":"k","\"q\"":0,"\ud83d\ude00":0,"\ud800x":0}`, []member{
			{"writeKey", `"k"`, `"write\u004bey":"k"`},
			{`"q"`, "0", `"\"q\"":0`},
			{"\U0001F600", "0", `"\ud83d\ude00":0`},
			{"\ufffdx", "0", `"\ud800x":0`},
		}},
		// Values are not validated.
		{`{"a":,"b":tru,"c":1 2}`, []member{{"a", "", `"a":`}, {"b", "tru", `"b":tru`}, {"c", "1 2", `"c":1 2`}}},
	} {
		got, err := members([]byte(tc.in))
		if err != nil {
			t.Errorf("Members(%q): %v", tc.in, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("Members(%q) = %q, want %q", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("Members(%q)[%d] = %q, want %q", tc.in, i, got[i], tc.want[i])
			}
		}
	}
}

func TestMembersErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		off  int
		want string
	}{
		{``, 0, "unexpected end of input"},
		{`[]`, 0, "not an object: starts with '['"},
		{`{`, 1, "unexpected end of input"},
		{`{"a"`, 4, "unexpected end of input"},
		{`{"a":`, 5, "unexpected end of input"},
		{`{"a":1`, 6, "unexpected end of input"},
		{`{"a":1,`, 7, "unexpected end of input"},
		{`{"a":1,}`, 7, "unexpected character '}'"},
		{`{a:1}`, 1, "unexpected character 'a'"},
		{`{"a" 1}`, 5, "unexpected character '1'"},
		{`{"a":1]`, 6, "unexpected character ']'"},
		{`{"a":"x}`, 5, "unterminated string"},
		{`{"a`, 1, "unterminated string"},
		{`{"\q":1}`, 2, `invalid escape '\q'`},
		{"{\"\xff\":1}", 2, "invalid UTF-8 in string"},
		{"{\"a\nb\":1}", 3, "control character 0x0a in string"},
		{`{} {}`, 3, "trailing data after object"},
	} {
		_, err := members([]byte(tc.in))
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Members(%q) = %v, want *SyntaxError", tc.in, err)
			continue
		}
		if se.Offset != tc.off || se.Msg != tc.want {
			t.Errorf("Members(%q) = %d %q, want %d %q", tc.in, se.Offset, se.Msg, tc.off, tc.want)
		}
	}
}

func TestScannersOnSamples(t *testing.T) {
	events := sampleEvents(t)
	array := append([]byte("[\n"), bytes.Join(events, []byte(",\n"))...)
	array = append(array, "\n]"...)
	got, err := elements(array)
	if err != nil || len(got) != len(events) {
		t.Fatalf("Elements: %d elements, %v; want %d", len(got), err, len(events))
	}
	for i, ev := range events {
		if got[i] != string(ev) {
			t.Errorf("element %d differs from its event", i)
		}
		var want map[string]json.RawMessage
		if err := json.Unmarshal(ev, &want); err != nil {
			t.Fatal(err)
		}
		ms, err := members(ev)
		if err != nil || len(ms) != len(want) {
			t.Errorf("event %d: %d members, %v; want %d", i, len(ms), err, len(want))
		}
		for _, m := range ms {
			if string(want[m.key]) != m.value {
				t.Errorf("event %d member %q differs", i, m.key)
			}
		}
	}
	allocs := testing.AllocsPerRun(50, func() {
		Elements(array, func(int, []byte) error { return nil })
		for _, ev := range events {
			Members(ev, func(Member) error { return nil })
		}
	})
	if allocs != 0 {
		t.Errorf("Elements and Members allocate %v times on the samples", allocs)
	}
}

func TestUnquote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`""`, ``},
		{`"abc"`, `abc`},
		{`"a\"b\\c\/d\b\f\n\r\t"`, "a\"b\\c/d\b\f\n\r\t"},
		{`"\u00e9\u00E9\u20ac"`, "éé€"},
		{`"\ud83d\ude00"`, "\U0001F600"},
		{`"\ud83d"`, "\ufffd"},
		{`"\ude00\ud83d"`, "\ufffd\ufffd"},
		{`"\ud83dx\ude00"`, "\ufffdx\ufffd"},
		{`"\ud83d\u0041"`, "\ufffdA"},
		{`"\ud83d\ud83d\ude00"`, "\ufffd\U0001F600"},
		{"\"日本語\"", "日本語"},
	} {
		got, err := Unquote([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("Unquote(%s) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		var ref string
		if err := json.Unmarshal([]byte(tc.in), &ref); err != nil || ref != tc.want {
			t.Errorf("encoding/json disagrees on %s: %q", tc.in, ref)
		}
		got2, err := AppendUnquote([]byte("x"), []byte(tc.in))
		if err != nil || string(got2) != "x"+tc.want {
			t.Errorf("AppendUnquote(x, %s) = %q, %v", tc.in, got2, err)
		}
	}
	in := []byte(`"plain"`)
	if got, _ := Unquote(in); &got[0] != &in[1] || cap(got) != len(got) {
		t.Error("Unquote of a string without escapes does not alias its input")
	}
	if n := testing.AllocsPerRun(100, func() { Unquote(in) }); n != 0 {
		t.Errorf("Unquote allocates %v times without escapes", n)
	}
}

func TestUnquoteErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		off  int
		want string
	}{
		{``, 0, "unexpected end of input"},
		{`x`, 0, "not a string: starts with 'x'"},
		{` "a"`, 0, "not a string: starts with ' '"},
		{`"a`, 0, "unterminated string"},
		{`"a" `, 3, "trailing data after string"},
		{`"a""b"`, 3, "trailing data after string"},
		{`"\x"`, 1, `invalid escape '\x'`},
		{`"\u12"`, 5, `invalid character '"' in \u escape`},
		{"\"\x01\"", 1, "control character 0x01 in string"},
		{"\"\xc3\"", 1, "invalid UTF-8 in string"},
	} {
		_, err := Unquote([]byte(tc.in))
		var se *SyntaxError
		if !errors.As(err, &se) || se.Offset != tc.off || se.Msg != tc.want {
			t.Errorf("Unquote(%q) = %v, want offset %d %q", tc.in, err, tc.off, tc.want)
		}
	}
}

func TestAppendQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, `""`},
		{`abc`, `"abc"`},
		{`{"a":"b\"c"}`, `"{\"a\":\"b\\\"c\"}"`},
		{"a/b<>&\u2028\u2029\x7f", "\"a/b<>&\u2028\u2029\x7f\""},
		{"\b\f\n\r\t\x00\x1f\x0b", `"\b\f\n\r\t\u0000\u001f\u000b"`},
		{`\`, `"\\"`},
		{"é€😀", `"é€😀"`},
		{"a\xffb\xc3", "\"a\ufffdb\ufffd\""},
		{"\xed\xa0\x80", "\"\ufffd\ufffd\ufffd\""},
	} {
		got := AppendQuote([]byte("x"), []byte(tc.in))
		if string(got) != "x"+tc.want {
			t.Errorf("AppendQuote(%q) = %s, want %s", tc.in, got[1:], tc.want)
		}
		back, err := Unquote(got[1:])
		if err != nil || string(back) != perByteValid(tc.in) {
			t.Errorf("Unquote(AppendQuote(%q)) = %q, %v", tc.in, back, err)
		}
	}
}

func TestAppendCompact(t *testing.T) {
	for _, in := range []string{
		``, `{}`, " {\n\t\"a\" : [ 1 , 2 ] ,\r\n \"b\" : \"x y\\\" z\" } \n",
		`{"a":"  \\"}`, "[ ]", `{"k":"\u00e9 \n"}`,
	} {
		var ref bytes.Buffer
		json.Compact(&ref, []byte(in))
		if got := AppendCompact(nil, []byte(in)); string(got) != ref.String() {
			t.Errorf("AppendCompact(%q) = %q, want %q", in, got, ref.String())
		}
		buf := []byte(in)
		if got := AppendCompact(buf[:0], buf); string(got) != ref.String() {
			t.Errorf("AppendCompact in place (%q) = %q, want %q", in, got, ref.String())
		}
	}
	// Invalid input: no panic, no validation.
	for _, in := range []string{`"abc`, `"\`, `{ "a" : x y }`} {
		AppendCompact(nil, []byte(in))
	}
}

// perByteValid replaces each byte of s that is not part of valid UTF-8
// with U+FFFD.
func perByteValid(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(r)
	}
	return b.String()
}

// objectMembers collects what ObjectMembers passes to its callback.
func objectMembers(b []byte) ([]member, error) {
	var out []member
	err := ObjectMembers(b, func(m Member) error {
		if cap(m.Value) != len(m.Value) {
			return errors.New("value has spare capacity")
		}
		out = append(out, member{string(m.Key), string(m.Value), string(b[m.Start:m.End])})
		return nil
	})
	return out, err
}

// checkObjectMembers fails t unless ObjectMembers accepts exactly what the
// encoding/json oracle accepts, returns Object's error on b (Object is the
// same scanner without a callback) and, when b is valid, finds the members
// Members finds.
func checkObjectMembers(t testing.TB, b []byte) {
	t.Helper()
	got, err := objectMembers(b)
	if (err == nil) != oracle(b) {
		t.Fatalf("ObjectMembers(%d-byte input) = %v, oracle says valid=%v", len(b), err, oracle(b))
	}
	want := Object(b)
	if errorString(err) != errorString(want) {
		t.Fatalf("ObjectMembers(%d-byte input) = %v, Object says %v", len(b), err, want)
	}
	if err != nil {
		return
	}
	ms, err := members(b)
	if err != nil || len(ms) != len(got) {
		t.Fatalf("ObjectMembers found %d members, Members %d (%v)", len(got), len(ms), err)
	}
	for i := range ms {
		if ms[i] != got[i] {
			t.Fatalf("member %d differs from Members'", i)
		}
	}
}

func errorString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestObjectMembers(t *testing.T) {
	for _, in := range []string{
		`{}`, ` { } `, `{"a":1}`, `{ "a" : [1,{"b":[]}] , "c" : "x" , "d":{"e":{}} }`, `{"dup":1,"dup":2}`,
		`{"write\u004bey":"k","\ud83d\ude00":true,"n":null,"f":-1.5e3}`,
		`{`, `{"a":1,}`, `{"a":tru}`, `[]`, `{"a":1} x`, "{\"a\":\"\xff\"}",
		strings.Repeat(`{"a":`, MaxDepth) + "{}" + strings.Repeat("}", MaxDepth),
	} {
		checkObjectMembers(t, []byte(in))
	}
	for _, ev := range sampleEvents(t) {
		checkObjectMembers(t, ev)
		for i := 0; i <= len(ev); i += 7 {
			checkObjectMembers(t, ev[:i])
		}
	}
	stop := errors.New("stop")
	if err := ObjectMembers([]byte(`{"a":1,"b":2}`), func(Member) error { return stop }); err != stop {
		t.Errorf("fn's error: got %v", err)
	}
	events := sampleEvents(t)
	allocs := testing.AllocsPerRun(50, func() {
		for _, ev := range events {
			ObjectMembers(ev, func(Member) error { return nil })
		}
	})
	if allocs != 0 {
		t.Errorf("ObjectMembers allocates %v times on the samples", allocs)
	}
}

func BenchmarkObjectMembers(b *testing.B) {
	benchValidator(b, func(ev []byte) bool { return ObjectMembers(ev, func(Member) error { return nil }) == nil })
}

func BenchmarkMembers(b *testing.B) {
	benchValidator(b, func(ev []byte) bool { return Members(ev, func(Member) error { return nil }) == nil })
}

func BenchmarkElements(b *testing.B) {
	names, sets := benchEvents(b)
	for _, name := range names {
		array := append(append([]byte("["), bytes.Join(sets[name], []byte(","))...), ']')
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(array)))
			for b.Loop() {
				Elements(array, func(int, []byte) error { return nil })
			}
		})
	}
}
