package ingest

import (
	"strings"
	"testing"
)

func TestDecodePostHogErrors(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{name: "empty", body: "", err: "posthog: empty body"},
		{name: "blank", body: "\n", err: "posthog: empty body"},
		{name: "string", body: `"x"`, err: `posthog: body is neither a JSON object nor an array: starts with '"'`},
		{name: "form", body: `data=eyJ9`, err: `posthog: body is neither a JSON object nor an array: starts with 'd'`},
		{name: "truncated batch", body: `{"api_key":"k","batch":[{"event":"a"}`, err: "posthog: invalid JSON at byte 37: unexpected end of input"},
		{name: "truncated array", body: `[{"event":"a"},`, err: "posthog: invalid JSON at byte 15: unexpected end of input"},
		{name: "array trailing", body: `[{"event":"a"}] []`, err: "posthog: invalid JSON at byte 16: trailing data after array"},
		{name: "batch object", body: `{"api_key":"k","batch":{"event":"a"}}`, err: `posthog: "batch" is an object, want an array`},
		{name: "api_key number", body: `{"api_key":1,"batch":[]}`, err: `posthog: "api_key" is a number, want a string`},
		{name: "single invalid", body: `{"event":"a","properties":{"x":01}}`, err: "posthog: invalid JSON at byte 32: unexpected character '1'"},
	}, noEventLimit(decodePostHog))
}

func TestDecodePostHog(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{
			name:   "batch",
			body:   `{"api_key":"phc_k","batch":[{"event":"$pageview","uuid":"u1","properties":{"$current_url":"/"}},{"event":"x","distinct_id":"d"}],"sent_at":"2024-01-01T00:00:00Z"}`,
			events: []string{`{"event":"$pageview","uuid":"u1","properties":{"$current_url":"/"}}`, `{"event":"x","distinct_id":"d"}`},
			ids:    []string{"u1", ""},
			key:    "phc_k",
		},
		{
			name:   "single event",
			body:   `{"api_key":"phc_k","event":"signup","properties":{"plan":"free"},"uuid":"u"}`,
			events: []string{`{"event":"signup","properties":{"plan":"free"},"uuid":"u"}`},
			ids:    []string{"u"},
			key:    "phc_k",
		},
		{
			name:   "single event pretty",
			body:   "{\n  \"event\": \"signup\",\n  \"api_key\": \"phc_k\"\n}\n",
			events: []string{`{"event":"signup"}`},
			key:    "phc_k",
		},
		{
			name:   "single event without key",
			body:   `{"event":"signup"}`,
			events: []string{`{"event":"signup"}`},
		},
		{
			name:     "single event without name",
			body:     `{"api_key":"phc_k","properties":{}}`,
			rejected: `1: missing "event"`,
			key:      "",
		},
		{
			name:     "bare array, key from the first event",
			body:     `[{"event":"a","api_key":"k1"},{"event":"b"},{"event":"c","api_key":"k2"},{"event":"d","api_key":"k1","uuid":"x"}]`,
			events:   []string{`{"event":"a"}`, `{"event":"b"}`, `{"event":"d","uuid":"x"}`},
			ids:      []string{"", "", "x"},
			rejected: `3: "api_key" differs from the request's`,
			key:      "k1",
		},
		{
			name:     "batch key wins",
			body:     `{"batch":[{"event":"a","api_key":"k1"},{"event":"b","api_key":"k0"}],"api_key":"k0"}`,
			events:   []string{`{"event":"b"}`},
			rejected: `1: "api_key" differs from the request's`,
			key:      "k0",
		},
		{
			name:   "bad elements cost only themselves",
			body:   `{"api_key":"k","batch":[{"event":"a"},{},{"event":1},{"event":null},"x",{"event":"b","api_key":7},{"event":"c","properties":{"a":[1,]}},{"event":"d"}]}`,
			events: []string{`{"event":"a"}`, `{"event":"d"}`},
			rejected: strings.Join([]string{
				`2: missing "event"`,
				`3: "event" is a number, want a string`,
				`4: "event" is null, want a string`,
				`5: invalid JSON at byte 0: not an object: starts with '"'`,
				`6: "api_key" is a number, want a string`,
				`7: invalid JSON at byte 34: unexpected character ']'`,
			}, "\n"),
			key: "k",
		},
		{
			name:     "size",
			body:     `[{"event":"0123456789"},{"event":"0123"}]`,
			max:      20,
			events:   []string{`{"event":"0123"}`},
			rejected: "1: event of 22 bytes, limit 20",
		},
		{name: "empty array", body: `[]`},
		{name: "empty batch", body: `{"batch":[],"api_key":"k"}`, key: "k"},
	}, noEventLimit(decodePostHog))
}
