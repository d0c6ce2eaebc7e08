package ingest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sluicehq/sluice/internal/jsonx"
)

// The fuzz targets of the SDK decoders check, on any input:
//
//   - no panic, and the body is not modified;
//   - an error comes alone, prefixed with the format's name;
//   - every event is one valid JSON object on one line, within the limit,
//     without spare capacity, and free of the write key;
//   - every element is either kept or rejected, once: len(Events) +
//     len(Rejected) is the number of elements, rejections in order;
//   - an ID is the event's id member, decoded;
//   - and, when the body is valid JSON, every verdict and every event
//     matches a model of the format's rules built on encoding/json.
//
// Seeds: the captured requests of testdata/sdk and the inputs below;
// regression inputs live in testdata/fuzz/<target>/.

// fuzzMax maps the fuzzer's limit to a usable one.
func fuzzMax(max int) int {
	if max <= 0 || max > 1<<20 {
		return 1 << 20
	}
	return max
}

// bigMax is a limit no event of body can exceed, even after normalization.
func bigMax(body []byte) int { return 2*len(body) + 64 }

// checkDecoded checks the properties every decoder has; n is the number of
// elements of the body, when err is nil. idKey and keyName name the id and
// write-key members ("" for none: IDs must then be nil).
func checkDecoded(t *testing.T, prefix string, body, orig []byte, max int, d Decoded, err error, n int, idKey, keyName string) {
	t.Helper()
	if !bytes.Equal(body, orig) {
		t.Fatal("the decoder modified the body")
	}
	if err != nil {
		if d.Events != nil || d.Rejected != nil || d.WriteKey != "" || !strings.HasPrefix(err.Error(), prefix+": ") {
			t.Fatalf("error %q with a result, or without the prefix %q", err, prefix)
		}
		return
	}
	if len(d.Events)+len(d.Rejected) != n {
		t.Fatalf("%d events + %d rejected != %d elements", len(d.Events), len(d.Rejected), n)
	}
	prev := 0
	for _, r := range d.Rejected {
		if r.Line <= prev || r.Line > n || r.Error == "" {
			t.Fatalf("rejection of element %d after %d of %d, or without a reason", r.Line, prev, n)
		}
		prev = r.Line
	}
	for i, ev := range d.Events {
		checkEventBody(t, i, ev.Body, max)
		members := objectOf(t, ev.Body)
		if _, ok := members[keyName]; ok && keyName != "" {
			t.Fatalf("event %d holds %q", i, keyName)
		}
		var id string
		if v, ok := members[idKey]; ok && idKey != "" && v[0] == '"' {
			json.Unmarshal(v, &id)
		}
		if string(ev.ID) != id || (ev.ID != nil && len(ev.ID) == 0) {
			t.Fatalf("event %d: ID of %d bytes, its %q of %d", i, len(ev.ID), idKey, len(id))
		}
	}
}

// countElements returns the number of elements of the array that member
// name of the object body holds (the last one), as jsonx sees it.
func countElements(body []byte, name string) int {
	var arr []byte
	jsonx.Members(body, func(m jsonx.Member) error {
		if string(m.Key) == name {
			arr = m.Value
		}
		return nil
	})
	return countArray(arr)
}

func countArray(arr []byte) int {
	n := 0
	jsonx.Elements(arr, func(int, []byte) error { n++; return nil })
	return n
}

// validJSON reports whether body is valid JSON that jsonx would accept as
// a whole (valid UTF-8): when it is, the models apply.
func validJSON(body []byte) bool { return json.Valid(body) && utf8.Valid(body) }

// sdkSeeds adds the captured bodies named and the extra inputs.
func sdkSeeds(f *testing.F, sdks []string, extra []string, add func(body []byte)) {
	for _, sdk := range sdks {
		for _, body := range loadCaptured(f, sdk).bodies {
			add(body)
		}
	}
	for _, s := range extra {
		add([]byte(s))
	}
}

var segmentCalls = []string{"batch", "track", "identify", "page", "screen", "group", "alias"}

func FuzzDecodeSegment(f *testing.F) {
	sdkSeeds(f, []string{"segment", "rudderstack"}, []string{
		``, `{}`, `{"batch":[]}`, `{"batch":[1,,{},{"type":"TRACK","writeKey":"k"}],"writeKey":"k"}`,
		`{"batch":[{"type":"track"}],"context":{"ip":"1"},"integrations":{"All":false}}`,
		`{"batch":[{"type":"page","context":{}}],"context":{ }}`, `{"writeKey":"k","event":"x"}`,
		`{"batch":[{"type":"track","write\u004bey":"x","messageId":"\ud800"}]}`, "{\"batch\":[\n{\"type\":\"alias\"}\n]}",
	}, func(body []byte) {
		f.Add(body, uint8(0), 1<<20)
		f.Add(body, uint8(1), 64)
	})
	f.Fuzz(func(t *testing.T, body []byte, callIndex uint8, max int) {
		max = fuzzMax(max)
		call := segmentCalls[int(callIndex)%len(segmentCalls)]
		orig := bytes.Clone(body)
		d, err := decodeSegment(body, call, lims(max, 0))
		n := 1
		if call == "batch" {
			n = countElements(body, "batch")
		}
		checkDecoded(t, "segment", body, orig, max, d, err, n, "messageId", "writeKey")
		for i, ev := range d.Events {
			var typ string
			json.Unmarshal(objectOf(t, ev.Body)["type"], &typ)
			if !segmentType([]byte(typ), false) || call != "batch" && !equalFoldASCII([]byte(typ), call) {
				t.Fatalf("event %d has a type of %d bytes", i, len(typ))
			}
		}
		if validJSON(body) {
			big := bigMax(body)
			d, err := decodeSegment(body, call, lims(big, 0))
			if err == nil {
				modelCall := ""
				if call != "batch" {
					modelCall = call
				}
				checkSegmentModel(t, body, d, big, modelCall)
			} else if segmentEnvelopeOK(t, body, call) {
				t.Fatalf("error %v on a valid body", err)
			}
		}
	})
}

// segmentEnvelopeOK reports whether the valid JSON body has the envelope
// of call, so that decodeSegment must not fail.
func segmentEnvelopeOK(t *testing.T, body []byte, call string) bool {
	if bytes.TrimLeft(body, " \t\r\n")[0] != '{' {
		return false
	}
	if call != "batch" {
		return jsonx.Object(body) == nil
	}
	env := objectOf(t, body)
	if b, ok := env["batch"]; !ok || b[0] != '[' {
		return false
	}
	if k, ok := env["writeKey"]; ok && k[0] != '"' && string(k) != "null" {
		return false
	}
	for _, name := range []string{"context", "integrations"} {
		if v, ok := env[name]; ok && string(v) != "null" && jsonx.Object(v) != nil {
			return false
		}
	}
	return true
}

func FuzzDecodeArray(f *testing.F) {
	sdkSeeds(f, nil, []string{
		``, `[]`, `[{}]`, `[1,{"a":1},,"x",{"b":[1,2]},]`, "[\n {\n  \"a\": 1\n }\n]", `[{"a":"x}]`, `[{]}]`,
	}, func(body []byte) { f.Add(body, 1<<20) })
	for _, sdk := range []string{"segment", "posthog"} {
		var env struct{ Batch json.RawMessage }
		json.Unmarshal(loadCaptured(f, sdk).bodies["compact"], &env)
		f.Add([]byte(env.Batch), 256)
	}
	f.Fuzz(func(t *testing.T, body []byte, max int) {
		max = fuzzMax(max)
		orig := bytes.Clone(body)
		d, err := decodeArray(body, lims(max, 0))
		checkDecoded(t, "events", body, orig, max, d, err, countArray(body), "", "")
		if err != nil || !json.Valid(body) {
			return
		}
		var elems []json.RawMessage
		json.Unmarshal(body, &elems)
		k := 0
		for i, e := range elems {
			if checkEvent(e, max) != nil {
				continue
			}
			want := []byte(e)
			if jsonx.HasNewline(e) {
				want = compactJSON(t, e)
			}
			if k >= len(d.Events) || !bytes.Equal(d.Events[k].Body, want) {
				t.Fatalf("element %d: not kept as it is", i)
			}
			k++
		}
		if k != len(d.Events) {
			t.Fatalf("%d events, the model says %d", len(d.Events), k)
		}
	})
}

func FuzzDecodeSnowplow(f *testing.F) {
	plain := loadCaptured(f, "snowplow").bodies["compact"]
	f.Add(snowplowBase64(f, plain), 1<<20)
	sdkSeeds(f, []string{"snowplow"}, []string{
		``, `{}`, tp2 + `[]}`, tp2 + `[{"e":"pv"},1,,{"e":"ue","ue_px":"e30","cx":"eyJhIjoxfQ=="}]}`,
		tp2 + `[{"e":"ue","ue_px":"e30","ue_pr":"{}"},{"e":"ue","ue_px":"Pz8_"},{"e":"ue","ue_pr":"{\"a\":\"\\u00e9\"}"}]}`,
		`{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-0","data":[{"e":"pv","eid":"x"}]}`,
	}, func(body []byte) { f.Add(body, 1<<20) })
	f.Fuzz(func(t *testing.T, body []byte, max int) {
		max = fuzzMax(max)
		orig := bytes.Clone(body)
		d, err := decodeSnowplow(body, lims(max, 0))
		checkDecoded(t, "snowplow", body, orig, max, d, err, countElements(body, "data"), "eid", "")
		checkSnowplowEvents(t, d)
		if validJSON(body) {
			big := bigMax(body)
			if d, err := decodeSnowplow(body, lims(big, 0)); err == nil {
				var env struct{ Data []json.RawMessage }
				json.Unmarshal(body, &env)
				checkModel(t, d, snowplowModel(t, env.Data, big))
			}
		}
	})
}

// checkSnowplowEvents checks that no event keeps a base64 member and that
// each embedded member holds a JSON object.
func checkSnowplowEvents(t *testing.T, d Decoded) {
	t.Helper()
	for i, ev := range d.Events {
		members := objectOf(t, ev.Body)
		if _, ok := members["ue_px"]; ok {
			t.Fatalf("event %d kept ue_px", i)
		}
		if _, ok := members["cx"]; ok {
			t.Fatalf("event %d kept cx", i)
		}
		for _, k := range []string{"ue_pr", "co"} {
			if v, ok := members[k]; ok {
				var s string
				if json.Unmarshal(v, &s) != nil || jsonx.Object([]byte(s)) != nil {
					t.Fatalf("event %d: %s does not hold a JSON object", i, k)
				}
			}
		}
	}
}

// snowplowModel is decodeSnowplow's rules for the elements elems, written
// with encoding/json and encoding/base64.
func snowplowModel(t *testing.T, elems []json.RawMessage, max int) model {
	var m model
	for i, e := range elems {
		members, ok := modelObject(e, max)
		if ok {
			ok = snowplowModelEvent(e, members)
		}
		if !ok {
			m.rejected = append(m.rejected, i+1)
			continue
		}
		var id string
		json.Unmarshal(members["eid"], &id)
		m.events = append(m.events, modelEvent{members, id})
	}
	return m
}

// snowplowModelEvent checks the element e, whose members are given, and
// turns its members into the event's.
func snowplowModelEvent(e []byte, members map[string]json.RawMessage) bool {
	if v, ok := members["e"]; !ok || v[0] != '"' {
		return false
	}
	ok := true
	seen := map[string]bool{}
	forEachMember(e, func(k string, v json.RawMessage) {
		switch k {
		case "ue_px", "ue_pr", "cx", "co":
			seen[k] = true
			var s string
			if v[0] != '"' || json.Unmarshal(v, &s) != nil {
				ok = false
				return
			}
			text := []byte(s)
			if k == "ue_px" || k == "cx" {
				text = modelBase64(s)
			}
			if text == nil || jsonx.Object(text) != nil {
				ok = false
			}
		}
	})
	if !ok || seen["ue_px"] && seen["ue_pr"] || seen["cx"] && seen["co"] {
		return false
	}
	for from, to := range map[string]string{"ue_px": "ue_pr", "cx": "co"} {
		if v, ok := members[from]; ok {
			var s string
			json.Unmarshal(v, &s)
			q, _ := json.Marshal(string(modelBase64(s)))
			members[to] = q
			delete(members, from)
		}
	}
	return true
}

// modelBase64 decodes s as any of the four base64 variants, or returns nil.
func modelBase64(s string) []byte {
	s = strings.ReplaceAll(s, " ", "+")
	for k := 0; k < 2 && strings.HasSuffix(s, "="); k++ {
		s = s[:len(s)-1]
	}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b
		}
	}
	return nil
}

// forEachMember calls fn for each member of the valid object e, in order.
func forEachMember(e []byte, fn func(k string, v json.RawMessage)) {
	dec := json.NewDecoder(bytes.NewReader(e))
	dec.Token()
	for dec.More() {
		k, _ := dec.Token()
		var v json.RawMessage
		dec.Decode(&v)
		fn(k.(string), v)
	}
}

// checkModel compares d with the model's verdicts and events; embedded
// JSON strings are compared decoded.
func checkModel(t *testing.T, d Decoded, want model) {
	t.Helper()
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
		got := objectOf(t, ev.Body)
		w := want.events[i]
		if len(got) != len(w.members) {
			t.Fatalf("event %d: %d members, the model says %d", i, len(got), len(w.members))
		}
		for k, v := range w.members {
			g, ok := got[k]
			if !ok {
				t.Fatalf("event %d: member %q missing", i, k)
			}
			var gs, ws string
			if json.Unmarshal(g, &gs) == nil && json.Unmarshal(v, &ws) == nil {
				if gs != ws {
					t.Fatalf("event %d: member %q differs from the model's", i, k)
				}
			} else if !bytes.Equal(compactJSON(t, g), compactJSON(t, v)) {
				t.Fatalf("event %d: member %q differs from the model's", i, k)
			}
		}
		if string(ev.ID) != w.id {
			t.Fatalf("event %d: ID differs from the model's", i)
		}
	}
}

func FuzzDecodeSnowplowQuery(f *testing.F) {
	var env struct{ Data []json.RawMessage }
	json.Unmarshal(loadCaptured(f, "snowplow").bodies["compact"], &env)
	var encEnv struct{ Data []json.RawMessage }
	json.Unmarshal(snowplowBase64(f, loadCaptured(f, "snowplow").bodies["compact"]), &encEnv)
	for i := range 3 {
		f.Add(snowplowQuery(f, env.Data[i], false), 1<<20)
		f.Add(snowplowQuery(f, encEnv.Data[i], true), 1<<20)
	}
	for _, q := range []string{"", "&", "e=pv", "e=pv&e=se", "e=ue&ue_px=e30&cx=eyJhIjoxfQ%3D%3D", "e=pv&x=%zz", "=&e=%FF%00&flag", "e=ue&ue_pr=%7B%7D&ue_px=e30"} {
		f.Add(q, 1<<20)
	}
	f.Fuzz(func(t *testing.T, query string, max int) {
		max = fuzzMax(max)
		d, err := decodeSnowplowQuery(query, lims(max, 0))
		checkDecoded(t, "snowplow", nil, nil, max, d, err, 1, "eid", "")
		checkSnowplowEvents(t, d)
		if err != nil {
			return
		}
		// The model: the parameters, decoded, as a JSON object of strings.
		params := map[string]json.RawMessage{}
		var order []string
		for _, p := range strings.Split(query, "&") {
			k, v, _ := strings.Cut(p, "=")
			key, _ := url.QueryUnescape(k)
			value, _ := url.QueryUnescape(v)
			key, value = perByteValid(key), perByteValid(value)
			if key == "" {
				continue
			}
			if _, dup := params[key]; dup {
				params = nil
				break
			}
			params[key], _ = json.Marshal(value)
			order = append(order, key)
		}
		var want model
		elem, _ := json.Marshal(params)
		if params != nil {
			members := objectOf(t, elem)
			if snowplowModelEvent(orderedObject(order, params), members) {
				var id string
				json.Unmarshal(members["eid"], &id)
				want.events = []modelEvent{{members, id}}
			}
		}
		if len(want.events) == 0 {
			want.rejected = []int{1}
		}
		if len(d.Rejected) == 1 && strings.HasPrefix(d.Rejected[0].Error, "event of ") {
			return // over the limit: the model does not know the event's size
		}
		checkModel(t, d, want)
	})
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

// orderedObject returns the JSON object of members in order.
func orderedObject(order []string, members map[string]json.RawMessage) []byte {
	b := []byte{'{'}
	for i, k := range order {
		if i > 0 {
			b = append(b, ',')
		}
		q, _ := json.Marshal(k)
		b = append(append(append(b, q...), ':'), members[k]...)
	}
	return append(b, '}')
}

func FuzzDecodePostHog(f *testing.F) {
	sdkSeeds(f, []string{"posthog"}, []string{
		``, `[]`, `{}`, `[{"event":"a","api_key":"k"},{"event":1},,{"event":"b","api_key":"x"}]`,
		`{"api_key":"k","event":"e","properties":{"a":1},"uuid":"u"}`, `{"api_key":"k","batch":[{"event":"a","api_key":"k"}]}`,
		"{\n \"event\": \"x\",\n \"api_key\": \"k\"\n}",
	}, func(body []byte) { f.Add(body, 1<<20) })
	f.Fuzz(func(t *testing.T, body []byte, max int) {
		max = fuzzMax(max)
		orig := bytes.Clone(body)
		d, err := decodePostHog(body, lims(max, 0))
		n := 1
		if c, _ := firstNonSpace(body); c == '[' {
			n = countArray(body)
		} else {
			hasBatch := false
			jsonx.Members(body, func(m jsonx.Member) error {
				hasBatch = hasBatch || string(m.Key) == "batch"
				return nil
			})
			if hasBatch {
				n = countElements(body, "batch")
			}
		}
		checkDecoded(t, "posthog", body, orig, max, d, err, n, "uuid", "api_key")
		for i, ev := range d.Events {
			if v := objectOf(t, ev.Body)["event"]; len(v) == 0 || v[0] != '"' {
				t.Fatalf("event %d has no string \"event\"", i)
			}
		}
		if validJSON(body) {
			big := bigMax(body)
			if d, err := decodePostHog(body, lims(big, 0)); err == nil {
				checkModel(t, d, posthogModel(t, body, big))
			}
		}
	})
}

// posthogModel is decodePostHog's rules written with encoding/json, for a
// body that is valid JSON and that decodePostHog accepted.
func posthogModel(t *testing.T, body []byte, max int) model {
	var m model
	var elems []json.RawMessage
	if c, _ := firstNonSpace(body); c == '[' {
		json.Unmarshal(body, &elems)
	} else if env := objectOf(t, body); env["batch"] != nil {
		json.Unmarshal(env["batch"], &elems)
		json.Unmarshal(env["api_key"], &m.key)
	} else {
		elems = []json.RawMessage{bytes.TrimSpace(body)}
	}
	for i, e := range elems {
		members, ok := modelObject(e, max)
		if ok {
			v, has := members["event"]
			ok = has && v[0] == '"' && modelKeys(e, "api_key", &m.key)
		}
		if !ok {
			m.rejected = append(m.rejected, i+1)
			continue
		}
		delete(members, "api_key")
		var id string
		json.Unmarshal(members["uuid"], &id)
		m.events = append(m.events, modelEvent{members, id})
	}
	return m
}
