package ingest

import "testing"

func TestDecodeArray(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{name: "empty", body: "", err: "events: empty body"},
		{name: "object", body: `{"a":1}`, err: "events: body is not a JSON array: starts with '{'"},
		{name: "ndjson", body: "{\"a\":1}\n{\"a\":2}\n", err: "events: body is not a JSON array: starts with '{'"},
		{name: "unterminated", body: `[{"a":"x}]`, err: "events: invalid JSON at byte 6: unterminated string"},
		{name: "trailing", body: `[{"a":1}]x`, err: "events: invalid JSON at byte 9: trailing data after array"},
		{name: "empty array", body: " [ ] "},
		{
			name:   "kept as they are",
			body:   ` [{"a":1}, { "b" : [1,2] } ,{}] `,
			events: []string{`{"a":1}`, `{ "b" : [1,2] }`, `{}`},
			ids:    []string{"", "", ""},
		},
		{
			name:     "bad elements cost only themselves",
			body:     "[1,{\"a\":1},\"x\",[],null,{\"a\":tru},{\"b\":\"\xff\"},,{\"c\":3}]",
			events:   []string{`{"a":1}`, `{"c":3}`},
			rejected: "1: invalid JSON at byte 0: not an object: starts with '1'\n3: invalid JSON at byte 0: not an object: starts with '\"'\n4: invalid JSON at byte 0: not an object: starts with '['\n5: invalid JSON at byte 0: not an object: starts with 'n'\n6: invalid JSON at byte 8: unexpected character '}'\n7: invalid JSON at byte 6: invalid UTF-8 in string\n8: invalid JSON at byte 0: unexpected end of input",
		},
		{
			name:   "pretty",
			body:   "[\n  {\n    \"a\": \"x y\",\n    \"b\": [ 1 ]\n  }\n]\n",
			events: []string{`{"a":"x y","b":[1]}`},
		},
		{
			name:     "size",
			body:     `[{"a":"0123456789"},{"a":1}]`,
			max:      16,
			events:   []string{`{"a":1}`},
			rejected: "1: event of 18 bytes, limit 16",
		},
		{
			// The limit applies to the element as received, white space
			// included, as for NDJSON lines.
			name:     "size before compaction",
			body:     "[{\n \"a\":1}]",
			max:      8,
			rejected: "1: event of 9 bytes, limit 8",
		},
	}, noEventLimit(decodeArray))
}
