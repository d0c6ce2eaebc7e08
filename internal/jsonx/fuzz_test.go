package jsonx

import (
	"strings"
	"testing"
)

// FuzzObject checks Object against the encoding/json oracle on any input:
// it must accept exactly what json.Valid and utf8.Valid accept, when the
// value is an object nested at most MaxDepth deep, and it must never panic.
func FuzzObject(f *testing.F) {
	for _, ev := range sampleEvents(f) {
		f.Add(ev)
	}
	for _, s := range []string{
		"", " ", "{}", " {} ", "[]", `"x"`, "1", "null", "{}{}", "{} x",
		`{"a":1}`, `{"a":[1,2,{"b":null}],"c":true,"d":false}`,
		`{"a":-0.5e+10}`, `{"a":01}`, `{"a":1.}`, `{"a":1e}`, `{"a":-}`,
		`{"a":"\"\\\/\b\f\n\r\t\u00e9\ud800"}`, `{"a":"\q"}`, `{"a":"\u12g4"}`,
		"{\"a\":\"x\ny\"}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xf4\x90\x80\x80\"}",
		"{\"a\":\"\xc0\xaf\"}", "{\"a\":\"\xe2\x82\xac\"}", "{\"a\":\"\xf0\x9f\x8e\x89\"}",
		`{"a":"0123456789abcdef0123456789"}`, `{"a":tru}`, `{"a":nulll}`,
		"\xef\xbb\xbf{}", "{\"a\":1}\n",
		strings.Repeat(`{"a":`, MaxDepth-1) + "{}" + strings.Repeat("}", MaxDepth-1),
		strings.Repeat(`{"a":`, MaxDepth) + "{}" + strings.Repeat("}", MaxDepth),
		`{"a":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + "}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check(t, b)
	})
}
