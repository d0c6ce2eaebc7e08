package ingest

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzParseNDJSON checks the body splitter and validator on any input:
// no panic, every line is either kept or rejected exactly once, kept events
// are single-line JSON objects within the limit, and re-joining the kept
// events parses back to the same events with no rejection.
func FuzzParseNDJSON(f *testing.F) {
	for _, s := range []string{
		"",
		"\n",
		"{}",
		"{\"id\":1}\n{\"id\":2}\n",
		"{\"id\":1}\r\n\r\n  {\"a\":[1,2,{\"b\":null}]}  ",
		"{\"id\":\n1}\n",
		"[1]\n\"s\"\n42\nnull\ntrue\n",
		"{\"a\":1}}\n{\n}\n",
		"{\"s\":\"\\u00e9\\n\"}\n\xff\xfe\n",
		"\x1f\x8b\x08\x00",
		"{\"k\":\"0123456789abcdef0123456789abcdef\"}\n",
	} {
		f.Add([]byte(s), 32)
	}
	f.Fuzz(func(t *testing.T, body []byte, maxEvent int) {
		if maxEvent <= 0 || maxEvent > 1<<20 {
			maxEvent = 1 << 20
		}
		in := bytes.Clone(body)
		events, rejected := parseNDJSON(body, maxEvent, nil, nil)
		if !bytes.Equal(in, body) {
			t.Fatal("parseNDJSON modified its input")
		}
		nonBlank := 0
		lines := bytes.Split(body, []byte("\n"))
		for _, l := range lines {
			if len(bytes.TrimSpace(l)) > 0 {
				nonBlank++
			}
		}
		if len(events)+len(rejected) != nonBlank {
			t.Fatalf("%d events + %d rejected != %d non-blank lines", len(events), len(rejected), nonBlank)
		}
		prev := 0
		for _, r := range rejected {
			if r.Line <= prev || r.Line > len(lines) || r.Error == "" {
				t.Fatalf("bad rejection %+v after line %d of %d", r, prev, len(lines))
			}
			if len(bytes.TrimSpace(lines[r.Line-1])) == 0 {
				t.Fatalf("blank line %d rejected", r.Line)
			}
			prev = r.Line
		}
		for _, ev := range events {
			if len(ev) > maxEvent || !json.Valid(ev) || ev[0] != '{' || bytes.IndexByte(ev, '\n') >= 0 {
				t.Fatalf("kept bad event %q", ev)
			}
			if cap(ev) != len(ev) {
				t.Fatalf("event %q has spare capacity: an append would overwrite the body", ev)
			}
		}
		again, rej := parseNDJSON(bytes.Join(events, []byte("\n")), maxEvent, nil, nil)
		if len(rej) != 0 || len(again) != len(events) {
			t.Fatalf("re-parse: %d events, %d rejected; want %d, 0", len(again), len(rej), len(events))
		}
		for i := range again {
			if !bytes.Equal(again[i], events[i]) {
				t.Fatalf("re-parse event %d: %q, want %q", i, again[i], events[i])
			}
		}
	})
}
