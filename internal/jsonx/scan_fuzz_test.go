package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// scanSeeds are shared by the scanner fuzz targets.
var scanSeeds = []string{
	``, `[]`, ` [ ] `, `{}`, `[1,2]`, `[{"a":1},{"b":[1,{"c":"]"}]}]`, `[1,,2]`, `[1,]`, `[,]`,
	`{"a":1,"b":[1,2],"c":{"d":"}"}}`, `{"a":,"b":1}`, `{"a":1,}`, `{"\u0041\ud83d\ude00":"\ud800"}`,
	`["\"\\",{"x":"\\"}]`, `[{]},[}]`, `["abc`, `[{"a":[1}]`, `[1]]`, "[\"\xff\"]", `{"a" 1}`,
	"{\n  \"batch\": [\n    {\"type\": \"track\"}\n  ],\n  \"writeKey\": \"k\"\n}\n",
}

// FuzzElements checks Elements against encoding/json: on a valid array it
// must find exactly the array's elements; when it succeeds and every
// element it found is valid, the whole input must be valid; and it must
// never panic, report an offset outside the input, or pass a raw that is
// not a trimmed, capacity-cut piece of the input.
func FuzzElements(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Add(append(append([]byte("["), bytes.Join(sampleEvents(f), []byte(","))...), ']'))
	f.Fuzz(func(t *testing.T, b []byte) {
		var raws [][]byte
		err := Elements(b, func(i int, raw []byte) error {
			if i != len(raws) || cap(raw) != len(raw) {
				t.Fatalf("element %d: index %d, cap %d len %d", len(raws), i, cap(raw), len(raw))
			}
			if len(raw) > 0 && (isSpace(raw[0]) || isSpace(raw[len(raw)-1])) {
				t.Fatalf("element %d not trimmed", i)
			}
			raws = append(raws, raw)
			return nil
		})
		checkSyntaxError(t, b, err)
		valid := json.Valid(b) && bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("["))
		if valid {
			var want []json.RawMessage
			if e := json.Unmarshal(b, &want); e != nil {
				t.Fatal(e)
			}
			if err != nil || len(raws) != len(want) {
				t.Fatalf("valid array of %d elements: Elements found %d, %v", len(want), len(raws), err)
			}
			for i := range want {
				if !bytes.Equal(compact(t, raws[i]), compact(t, want[i])) {
					t.Fatalf("element %d differs from encoding/json's", i)
				}
			}
		}
		if err == nil && !valid {
			for _, raw := range raws {
				if !json.Valid(raw) {
					return // a bad element explains the bad input
				}
			}
			t.Fatalf("Elements accepted invalid JSON whose %d elements are all valid", len(raws))
		}
	})
}

// FuzzMembers checks Members against encoding/json the same way: on a
// valid object (with valid UTF-8) it must find exactly the object's
// members, names decoded as encoding/json decodes them; when it succeeds
// and every value is valid, the whole input must be valid; and Start, End
// must locate each member.
func FuzzMembers(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	for _, ev := range sampleEvents(f) {
		f.Add(ev)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ms []Member
		prevEnd := 0
		err := Members(b, func(m Member) error {
			if m.Start < prevEnd || m.End > len(b) || m.Start >= m.End || b[m.Start] != '"' {
				t.Fatalf("member %d at [%d,%d) after %d in %d bytes", len(ms), m.Start, m.End, prevEnd, len(b))
			}
			if !bytes.HasSuffix(b[m.Start:m.End], m.Value) || cap(m.Value) != len(m.Value) {
				t.Fatalf("member %d: value is not the end of the member's span", len(ms))
			}
			prevEnd = m.End
			m.Key = bytes.Clone(m.Key) // valid only during the call
			ms = append(ms, m)
			return nil
		})
		checkSyntaxError(t, b, err)
		valid := json.Valid(b) && bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{"))
		if valid && utf8.Valid(b) {
			if err != nil {
				t.Fatalf("valid object: %v", err)
			}
			type kv struct {
				key   string
				value json.RawMessage
			}
			var want []kv
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.Token() // '{'
			for dec.More() {
				key, _ := dec.Token()
				var value json.RawMessage
				if e := dec.Decode(&value); e != nil {
					t.Fatal(e)
				}
				want = append(want, kv{key.(string), value})
			}
			if len(ms) != len(want) {
				t.Fatalf("Members found %d members, encoding/json %d", len(ms), len(want))
			}
			for i, w := range want {
				if string(ms[i].Key) != w.key || !bytes.Equal(compact(t, ms[i].Value), compact(t, w.value)) {
					t.Fatalf("member %d differs from encoding/json's", i)
				}
			}
		}
		if err == nil && !valid {
			for _, m := range ms {
				if !json.Valid(m.Value) {
					return
				}
			}
			t.Fatalf("Members accepted invalid JSON whose %d values are all valid", len(ms))
		}
	})
}

// FuzzObjectMembers checks that ObjectMembers validates exactly as Object
// does and, on valid input, finds the members Members finds.
func FuzzObjectMembers(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	for _, ev := range sampleEvents(f) {
		f.Add(ev)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkObjectMembers(t, b)
	})
}

// FuzzUnquote checks Unquote against encoding/json on any input.
func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`""`, `"a"`, `"\u00e9\ud83d\ude00\ud800\"\\\/\b\f\n\r\t"`, `"\ud83d\ud83d\ude00"`, `"a" `, `"\x"`, "\"\xff\"", `x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Unquote(b)
		checkSyntaxError(t, b, err)
		var want string
		ok := json.Unmarshal(b, &want) == nil && len(b) > 0 && b[0] == '"' && b[len(b)-1] == '"' && utf8.Valid(b)
		if ok != (err == nil) {
			t.Fatalf("Unquote(%q) error %v, encoding/json ok=%v", b, err, ok)
		}
		if ok && string(got) != want {
			t.Fatalf("Unquote(%q) = %q, encoding/json %q", b, got, want)
		}
	})
}

// FuzzAppendQuote checks that AppendQuote produces a valid JSON string that
// unquotes to its input (invalid UTF-8 replaced), and never escapes more
// than JSON.stringify would.
func FuzzAppendQuote(f *testing.F) {
	for _, s := range []string{"", "abc", `{"a":"b\"c"}`, "\x00\x1f\x7f\u2028<>&/", "a\xffb\xed\xa0\x80"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		q := AppendQuote(nil, s)
		back, err := Unquote(q)
		if err != nil {
			t.Fatalf("AppendQuote(%q) = %q: %v", s, q, err)
		}
		if string(back) != perByteValid(string(s)) {
			t.Fatalf("AppendQuote(%q) = %q unquotes to %q", s, q, back)
		}
		if utf8.Valid(s) && !bytes.ContainsAny(s, "\"\\") && !bytes.ContainsFunc(s, func(r rune) bool { return r < 0x20 }) && string(q[1:len(q)-1]) != string(s) {
			t.Fatalf("AppendQuote(%q) = %q escapes what needs none", s, q)
		}
	})
}

// FuzzAppendCompact checks AppendCompact against encoding/json.Compact on
// valid input, in place and not, and for absence of panics on any input.
func FuzzAppendCompact(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := AppendCompact(nil, b)
		if len(got) > len(b) {
			t.Fatalf("AppendCompact grew %d bytes to %d", len(b), len(got))
		}
		in := bytes.Clone(b)
		inPlace := AppendCompact(in[:0], in)
		if !bytes.Equal(got, inPlace) {
			t.Fatal("in-place compaction differs")
		}
		if json.Valid(b) {
			if !bytes.Equal(got, compact(t, b)) {
				t.Fatalf("AppendCompact(%q) = %q, encoding/json %q", b, got, compact(t, b))
			}
		}
	})
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("json.Compact: %v", err)
	}
	return buf.Bytes()
}

// checkSyntaxError fails t unless err is nil or a well-formed *SyntaxError.
func checkSyntaxError(t *testing.T, b []byte, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset < 0 || se.Offset > len(b) || se.Msg == "" {
		t.Fatalf("bad error %#v for %d-byte input", err, len(b))
	}
}
