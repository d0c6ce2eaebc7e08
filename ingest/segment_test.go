package ingest

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func segmentBatch(body []byte, max int) (Decoded, error) {
	return decodeSegment(body, "batch", lims(max, 0))
}

func TestDecodeSegmentErrors(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{name: "empty", body: "", err: "segment: empty body"},
		{name: "blank", body: " \r\n\t", err: "segment: empty body"},
		{name: "array", body: `[{"type":"track"}]`, err: `segment: body is not a JSON object: starts with '['`},
		{name: "gzip", body: "\x1f\x8b\x08\x00", err: "segment: body is not a JSON object: starts with 0x1f"},
		{name: "quote", body: `'x'`, err: "segment: body is not a JSON object: starts with 0x27"},
		{name: "truncated", body: `{"batch":[{"type":"track"}]`, err: "segment: invalid JSON at byte 27: unexpected end of input"},
		{name: "unterminated", body: `{"batch":[{"type":"track"},{"a":"x]}`, err: "segment: invalid JSON at byte 32: unterminated string"},
		{name: "bad name", body: `{"batch":[],"\x":1}`, err: `segment: invalid JSON at byte 13: invalid escape '\x'`},
		{name: "trailing", body: `{"batch":[]}{}`, err: "segment: invalid JSON at byte 12: trailing data after object"},
		{name: "trailing in batch", body: `{"batch":[] x}`, err: "segment: invalid JSON at byte 12: trailing data after array"},
		{name: "unbalanced", body: `{"batch":[{"type":"track"]}`, err: "segment: invalid JSON at byte 27: unexpected end of input"},
		{name: "no batch", body: `{"writeKey":"k","sentAt":"2024-01-01T00:00:00Z"}`, err: `segment: body has no "batch"`},
		{name: "batch string", body: `{"batch":"[]"}`, err: `segment: "batch" is a string, want an array`},
		{name: "batch object", body: `{"batch":{"type":"track"}}`, err: `segment: "batch" is an object, want an array`},
		{name: "batch null", body: `{"batch":null}`, err: `segment: "batch" is null, want an array`},
		{name: "batch empty", body: `{"batch":}`, err: `segment: "batch" is empty, want an array`},
		{name: "key number", body: `{"batch":[],"writeKey":5}`, err: `segment: "writeKey" is a number, want a string`},
		{name: "key escape", body: `{"batch":[],"writeKey":"a\qb"}`, err: `segment: invalid JSON at byte 25: invalid escape '\q'`},
		{name: "context array", body: `{"batch":[],"context":[1]}`, err: `segment: "context" is an array, want an object`},
		{name: "context bad", body: `{"batch":[],"context":{"a":tru}}`, err: "segment: invalid JSON at byte 30: unexpected character '}'"},
		{name: "integrations string", body: `{"batch":[],"integrations":"all"}`, err: `segment: "integrations" is a string, want an object`},
	}, segmentBatch)

	runDecodeCases(t, []decodeCase{
		{name: "single not object", body: `[]`, err: `segment: body is not a JSON object: starts with '['`},
		{name: "single invalid", body: `{"type":"track",}`, err: "segment: invalid JSON at byte 16: unexpected character '}'"},
		{name: "single trailing", body: `{"type":"track"} {}`, err: "segment: invalid JSON at byte 17: trailing data after object"},
		{name: "single bad UTF-8", body: "{\"event\":\"caf\xe9\"}", err: "segment: invalid JSON at byte 13: invalid UTF-8 in string"},
	}, func(b []byte, max int) (Decoded, error) { return decodeSegment(b, "track", lims(max, 0)) })

	for _, call := range []string{"", "Batch", "TRACK", "v1/track", "purchase"} {
		_, err := decodeSegment([]byte(`{"batch":[]}`), call, lims(DefaultMaxEventBytes, 0))
		want := `segment: unknown call "` + call + `": want batch, track, identify, page, screen, group or alias`
		if errorString(err) != want {
			t.Errorf("call %q: %v, want %s", call, err, want)
		}
	}
}

func TestDecodeSegmentBatch(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{name: "empty batch", body: `{"batch":[]}`},
		{name: "empty batch spaced", body: "{ \"batch\" : [ \n ] }"},
		{
			name:   "kept as is",
			body:   `{"batch":[{"type":"track","event":"A","messageId":"m1"},{"type":"identify","userId":"u"}],"writeKey":"k","sentAt":"x"}`,
			events: []string{`{"type":"track","event":"A","messageId":"m1"}`, `{"type":"identify","userId":"u"}`},
			ids:    []string{"m1", ""},
			key:    "k",
		},
		{
			name:   "odd casings keep their bytes",
			body:   `{"batch":[{"type":"Track"},{"type":"IDENTIFY"},{"type":"pAgE"},{"type":"screen"},{"type":"Group"},{"type":"ALIAS"}]}`,
			events: []string{`{"type":"Track"}`, `{"type":"IDENTIFY"}`, `{"type":"pAgE"}`, `{"type":"screen"}`, `{"type":"Group"}`, `{"type":"ALIAS"}`},
		},
		{
			name:     "bad elements cost only themselves",
			body:     `{"batch":[1,{"type":"track","messageId":"a"},,{},{"type":5},{"type":"purchase"},{"type":"track" "x":1},"s",{"type":"track\u212a"},null,{"type":"page","messageId":"b"},{"type":"track","x":tru}]}`,
			events:   []string{`{"type":"track","messageId":"a"}`, `{"type":"page","messageId":"b"}`},
			ids:      []string{"a", "b"},
			rejected: "1: invalid JSON at byte 0: not an object: starts with '1'\n3: invalid JSON at byte 0: unexpected end of input\n4: missing \"type\"\n5: \"type\" is a number, want a string\n6: unknown \"type\" \"purchase\": want track, identify, page, screen, group or alias\n7: invalid JSON at byte 16: unexpected character '\"'\n8: invalid JSON at byte 0: not an object: starts with '\"'\n9: unknown \"type\" \"track\u212a\": want track, identify, page, screen, group or alias\n10: invalid JSON at byte 0: not an object: starts with 'n'\n12: invalid JSON at byte 23: unexpected character '}'",
		},
		{
			// Brackets are counted, not matched, to find where an element
			// ends: here the element is cut at the second ']' and rejected.
			name:     "mismatched brackets",
			body:     `{"batch":[{"type":"track"]],"x":1}`,
			rejected: "1: invalid JSON at byte 15: unexpected character ']'",
		},
		{
			name:     "trailing comma is an empty element",
			body:     `{"batch":[{"type":"track"},]}`,
			events:   []string{`{"type":"track"}`},
			rejected: "2: invalid JSON at byte 0: unexpected end of input",
		},
		{
			name:     "size limit",
			body:     `{"batch":[{"type":"track","p":"0123456789"},{"type":"track"}]}`,
			max:      30,
			events:   []string{`{"type":"track"}`},
			rejected: "1: event of 33 bytes, limit 30",
		},
		{
			name:   "ids",
			body:   `{"batch":[{"type":"track","messageId":"a\"b"},{"type":"track","messageId":""},{"type":"track","messageId":7},{"type":"track","messageId":"x","messageId":"y"}]}`,
			events: []string{`{"type":"track","messageId":"a\"b"}`, `{"type":"track","messageId":""}`, `{"type":"track","messageId":7}`, `{"type":"track","messageId":"x","messageId":"y"}`},
			ids:    []string{`a"b`, "", "", "y"},
		},
		{
			name:   "last type wins",
			body:   `{"batch":[{"type":"purchase","type":"track"}]}`,
			events: []string{`{"type":"purchase","type":"track"}`},
		},
		{
			name:   "pretty-printed elements are compacted",
			body:   "{\n  \"batch\": [\n    {\n      \"type\": \"track\",\n      \"properties\": { \"a b\": [ 1, 2 ] }\n    },\n    {\"type\" : \"page\"}\n  ]\n}\n",
			events: []string{`{"type":"track","properties":{"a b":[1,2]}}`, `{"type" : "page"}`},
		},
		{
			name:     "writeKey stripped from messages",
			body:     `{"batch":[{"writeKey":"k","type":"track"},{"type":"track","writeKey":"k","event":"e"},{"type":"track","writeKey":"other"},{"type":"track","writeKey":1},{"type":"track","writeKey":null},{"type":"track","write\u004bey":"k"}],"writeKey":"k"}`,
			events:   []string{`{"type":"track"}`, `{"type":"track","event":"e"}`, `{"type":"track"}`, `{"type":"track"}`},
			rejected: "3: \"writeKey\" differs from the request's\n4: \"writeKey\" is a number, want a string",
			key:      "k",
		},
		{
			name:     "writeKey from the first message",
			body:     `{"batch":[{"type":"track"},{"type":"track","writeKey":"k1"},{"type":"track","writeKey":"k2"}]}`,
			events:   []string{`{"type":"track"}`, `{"type":"track"}`},
			rejected: "3: \"writeKey\" differs from the request's",
			key:      "k1",
		},
		{
			name:   "null writeKey",
			body:   `{"batch":[{"type":"track"}],"writeKey":null}`,
			events: []string{`{"type":"track"}`},
		},
		{
			name:   "last envelope writeKey wins",
			body:   `{"writeKey":"a","batch":[{"type":"track"}],"writeKey":"b"}`,
			events: []string{`{"type":"track"}`},
			key:    "b",
		},
		{
			name: "batch context and integrations",
			body: `{"batch":[{"type":"track"},{"type":"track","context":{"ip":"own"}},{"type":"track","integrations":{}},{"type":"track","context":null}],` +
				`"context":{"ip":"1.2.3.4","library":{"name":"x"}},"integrations":{"All":false}}`,
			events: []string{
				`{"type":"track","context":{"ip":"1.2.3.4","library":{"name":"x"}},"integrations":{"All":false}}`,
				`{"type":"track","context":{"ip":"own"},"integrations":{"All":false}}`,
				`{"type":"track","integrations":{},"context":{"ip":"1.2.3.4","library":{"name":"x"}}}`,
				`{"type":"track","context":null,"integrations":{"All":false}}`,
			},
		},
		{
			name:   "batch context pretty, empty or null",
			body:   "{\"batch\":[{\"type\":\"track\"}],\"context\":{\n \"ip\": \"1.2.3.4\"\n},\"integrations\":{ }}",
			events: []string{`{"type":"track","context":{"ip":"1.2.3.4"}}`},
		},
		{
			name:   "batch context null",
			body:   `{"batch":[{"type":"track"}],"context":null,"integrations":null}`,
			events: []string{`{"type":"track"}`},
		},
		{
			name:     "normalized event over the limit",
			body:     `{"batch":[{"type":"track"},{"type":"track","context":{}}],"context":{"ip":"1.2.3.4"}}`,
			max:      40,
			events:   []string{`{"type":"track","context":{}}`},
			rejected: "1: event of 43 bytes after normalization, limit 40",
		},
		{
			name:   "other envelope members are not validated",
			body:   `{"sentAt":tru,"batch":[{"type":"track"}],"x":[1,]}`,
			events: []string{`{"type":"track"}`},
		},
	}, segmentBatch)
}

func TestDecodeSegmentSingle(t *testing.T) {
	for _, tc := range []struct {
		call, body, event, key, rejected string
		max                              int
	}{
		{call: "track", body: `{"event":"Signed Up","messageId":"m"}`, event: `{"event":"Signed Up","messageId":"m","type":"track"}`},
		{call: "identify", body: `{}`, event: `{"type":"identify"}`},
		{call: "page", body: ` {"type":"PAGE","name":"Home"} ` + "\n", event: `{"type":"PAGE","name":"Home"}`},
		{call: "alias", body: `{"writeKey":"k","userId":"u","previousId":"p"}`, event: `{"userId":"u","previousId":"p","type":"alias"}`, key: "k"},
		{call: "group", body: `{"writeKey":"k"}`, event: `{"type":"group"}`, key: "k"},
		{call: "screen", body: "{\n  \"name\": \"Home\",\n  \"writeKey\": \"k\"\n}", event: `{"name":"Home","type":"screen"}`, key: "k"},
		{call: "track", body: `{"type":"page"}`, rejected: `1: "type" "page" does not match the call "track"`},
		{call: "track", body: `{"type":["track"]}`, rejected: `1: "type" is an array, want a string`},
		{call: "track", body: `{"writeKey":5}`, rejected: `1: "writeKey" is a number, want a string`},
		{call: "track", body: `{"event":"0123456789"}`, max: 20, rejected: "1: event of 22 bytes, limit 20"},
		{call: "track", body: `{"event":"01234567"}`, max: 20, rejected: "1: event of 35 bytes after normalization, limit 20"},
	} {
		max := tc.max
		if max == 0 {
			max = DefaultMaxEventBytes
		}
		d, err := decodeSegment([]byte(tc.body), tc.call, lims(max, 0))
		if err != nil {
			t.Errorf("%s %s: %v", tc.call, tc.body, err)
			continue
		}
		var events []string
		for i, ev := range d.Events {
			checkEventBody(t, i, ev.Body, max)
			events = append(events, string(ev.Body))
		}
		if strings.Join(events, "\n") != tc.event || rejections(d.Rejected) != tc.rejected || d.WriteKey != tc.key {
			t.Errorf("%s %s: events %q, rejected %q, key %q; want %q, %q, %q", tc.call, tc.body, events, rejections(d.Rejected), d.WriteKey, tc.event, tc.rejected, tc.key)
		}
	}
}

// TestDecodeSegmentSpecMessages sends every Segment/RudderStack spec
// message of the rudder-transformer fixtures (odd casings, odd and invalid
// shapes, one 325 KB message) in one batch, and checks each verdict
// against a model of the rules built on encoding/json.
func TestDecodeSegmentSpecMessages(t *testing.T) {
	file := dataFile("rudderstack_segment_spec/messages.ndjson")
	if file == "" {
		t.Skip("rudderstack_segment_spec/messages.ndjson not present")
	}
	msgs := readNDJSON(t, file, 0)
	for _, max := range []int{DefaultMaxEventBytes, 32 << 10} {
		body := batchOf(`{"batch":[`, msgs, `],"writeKey":"k"}`)
		d, err := decodeSegment(body, "batch", lims(max, 0))
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Events)+len(d.Rejected) != len(msgs) {
			t.Fatalf("%d events + %d rejected != %d messages", len(d.Events), len(d.Rejected), len(msgs))
		}
		checkSegmentModel(t, body, d, max, "")
		t.Logf("limit %d: %d messages, %d kept, %d rejected", max, len(msgs), len(d.Events), len(d.Rejected))
	}
}

// checkSegmentModel checks the result d of decoding the valid JSON body
// against segmentModel.
func checkSegmentModel(t testing.TB, body []byte, d Decoded, max int, call string) {
	t.Helper()
	want := segmentModel(t, body, max, call)
	if len(d.Events) != len(want.events) || len(d.Rejected) != len(want.rejected) || d.WriteKey != want.key {
		t.Fatalf("%d events, %d rejected, key of %d bytes; the model says %d, %d, %d bytes",
			len(d.Events), len(d.Rejected), len(d.WriteKey), len(want.events), len(want.rejected), len(want.key))
	}
	for i, r := range d.Rejected {
		if r.Line != want.rejected[i] {
			t.Fatalf("rejection %d is of element %d, the model says %d (%s)", i, r.Line, want.rejected[i], r.Error)
		}
	}
	for i, ev := range d.Events {
		checkEventBody(t, i, ev.Body, max)
		got := objectOf(t, ev.Body)
		w := want.events[i]
		if len(got) != len(w.members) {
			t.Fatalf("event %d: %d members, the model says %d", i, len(got), len(w.members))
		}
		for k, v := range w.members {
			if !bytes.Equal(compactJSON(t, got[k]), compactJSON(t, v)) {
				t.Fatalf("event %d: member %q differs from the model's", i, k)
			}
		}
		if string(ev.ID) != w.id {
			t.Fatalf("event %d: ID differs from the model's", i)
		}
	}
}

type modelEvent struct {
	members map[string]json.RawMessage
	id      string
}

type model struct {
	events   []modelEvent
	rejected []int // lines
	key      string
}

// segmentModel is decodeSegment's rules written with encoding/json, for a
// body that is valid JSON.
func segmentModel(t testing.TB, body []byte, max int, call string) model {
	var m model
	var elems []json.RawMessage
	var ctx, integ json.RawMessage
	if call == "" {
		env := objectOf(t, body)
		if k, ok := env["writeKey"]; ok {
			json.Unmarshal(k, &m.key)
		}
		json.Unmarshal(env["batch"], &elems)
		ctx, integ = env["context"], env["integrations"]
		if ctx != nil && (string(compactJSON(t, ctx)) == "{}" || string(ctx) == "null") {
			ctx = nil
		}
		if integ != nil && (string(compactJSON(t, integ)) == "{}" || string(integ) == "null") {
			integ = nil
		}
	} else {
		elems = []json.RawMessage{bytes.TrimSpace(body)}
	}
	for i, e := range elems {
		members, ok := modelObject(e, max)
		if !ok {
			m.rejected = append(m.rejected, i+1)
			continue
		}
		typ, hasType := members["type"]
		var s string
		switch {
		case !hasType && call != "":
			members["type"] = json.RawMessage(`"` + call + `"`)
		case json.Unmarshal(typ, &s) != nil || typ[0] != '"':
			m.rejected = append(m.rejected, i+1)
			continue
		case call == "" && !segmentType([]byte(s), false):
			m.rejected = append(m.rejected, i+1)
			continue
		case call != "" && !equalFoldASCII([]byte(s), call):
			m.rejected = append(m.rejected, i+1)
			continue
		}
		if !modelKeys(e, "writeKey", &m.key) {
			m.rejected = append(m.rejected, i+1)
			continue
		}
		delete(members, "writeKey")
		if _, ok := members["context"]; !ok && ctx != nil {
			members["context"] = ctx
		}
		if _, ok := members["integrations"]; !ok && integ != nil {
			members["integrations"] = integ
		}
		var id string
		json.Unmarshal(members["messageId"], &id)
		m.events = append(m.events, modelEvent{members, id})
	}
	return m
}

// modelObject decodes element e if it is a JSON object of at most max
// bytes that jsonx.Object accepts (valid UTF-8, not too deep).
func modelObject(e []byte, max int) (map[string]json.RawMessage, bool) {
	var members map[string]json.RawMessage
	if len(e) > max || !json.Valid(e) || json.Unmarshal(e, &members) != nil || members == nil || checkEvent(e, max) != nil {
		return nil, false
	}
	return members, true
}

// modelKeys checks each member name of the object e, in order, against
// the request's key, adopting the first when there is none: false if one
// is neither null nor a string, or differs.
func modelKeys(e []byte, name string, key *string) bool {
	dec := json.NewDecoder(bytes.NewReader(e))
	dec.Token()
	for dec.More() {
		k, _ := dec.Token()
		var v json.RawMessage
		dec.Decode(&v)
		if k != name || string(v) == "null" {
			continue
		}
		var s string
		if v[0] != '"' || json.Unmarshal(v, &s) != nil {
			return false
		}
		if *key == "" {
			*key = s
		} else if s != *key {
			return false
		}
	}
	return true
}
