package ingest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/jsonx"
)

const tp2 = `{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4","data":`

// b64 encodes s the four ways trackers do, chosen by variant mod 4:
// URL-safe unpadded (the JavaScript trackers), URL-safe padded, standard
// unpadded and standard padded.
func b64(s []byte, variant int) string {
	return []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding}[variant%4].EncodeToString(s)
}

// snowplowBase64 returns the tp2 body with the ue_pr and co of each
// element sent as ue_px and cx instead, in place, the elements rotating
// through the base64 variants.
func snowplowBase64(tb testing.TB, body []byte) []byte {
	tb.Helper()
	var env struct {
		Schema string
		Data   []json.RawMessage
	}
	if err := json.Unmarshal(body, &env); err != nil {
		tb.Fatal(err)
	}
	var elems [][]byte
	for i, e := range env.Data {
		out := []byte{'{'}
		jsonx.Members(e, func(m jsonx.Member) error {
			if len(out) > 1 {
				out = append(out, ',')
			}
			switch k := string(m.Key); k {
			case "ue_pr", "co":
				s, err := jsonx.Unquote(m.Value)
				if err != nil {
					tb.Fatal(err)
				}
				out = append(out, `"`+map[string]string{"ue_pr": "ue_px", "co": "cx"}[k]+`":"`+b64(s, i)+`"`...)
			default:
				out = append(out, e[m.Start:m.End]...)
			}
			return nil
		})
		elems = append(elems, append(out, '}'))
	}
	return batchOf(`{"schema":"`+env.Schema+`","data":[`, elems, `]}`)
}

// snowplowQuery returns the GET /i query that carries the tp2 element e,
// a JSON object of strings, parameters in the element's order. plus leaves
// '+' unescaped, as some clients do (it then reads as a space).
func snowplowQuery(tb testing.TB, e []byte, plus bool) string {
	tb.Helper()
	var params []string
	jsonx.Members(e, func(m jsonx.Member) error {
		v, err := jsonx.Unquote(m.Value)
		if err != nil {
			tb.Fatal(err)
		}
		value := url.QueryEscape(string(v))
		if plus {
			value = strings.ReplaceAll(value, "%2B", "+")
		}
		params = append(params, url.QueryEscape(string(m.Key))+"="+value)
		return nil
	})
	return strings.Join(params, "&")
}

// TestSnowplowWireVariants checks that the captured events give the same
// bytes sent plain, in base64 (every variant), and one by one as GET /i
// queries, plain and base64.
func TestSnowplowWireVariants(t *testing.T) {
	plain := loadCaptured(t, "snowplow").bodies["compact"]
	encoded := snowplowBase64(t, plain)
	if bytes.Contains(encoded, []byte(`"ue_pr"`)) || bytes.Contains(encoded, []byte(`"co"`)) || !bytes.Contains(encoded, []byte(`"ue_px"`)) || !bytes.Contains(encoded, []byte(`"cx"`)) {
		t.Fatal("snowplowBase64 did not convert the body")
	}
	want, err := decodeSnowplow(plain, lims(DefaultMaxEventBytes, 0))
	if err != nil || len(want.Events) != 30 {
		t.Fatalf("plain: %d events, %v", len(want.Events), err)
	}
	got, err := decodeSnowplow(encoded, lims(DefaultMaxEventBytes, 0))
	if err != nil || len(got.Events) != len(want.Events) || len(got.Rejected) != 0 {
		t.Fatalf("base64: %d events, %d rejected, %v", len(got.Events), len(got.Rejected), err)
	}
	built := 0
	for i := range want.Events {
		if !bytes.Equal(got.Events[i].Body, want.Events[i].Body) || !bytes.Equal(got.Events[i].ID, want.Events[i].ID) {
			t.Errorf("event %d: base64 and plain differ", i)
		}
		if !aliases(got.Events[i].Body, encoded) {
			built++
		}
	}
	if built != 20 { // the ue and se events; the pv events need no change
		t.Errorf("%d events built, want 20", built)
	}

	var env struct{ Data []json.RawMessage }
	json.Unmarshal(plain, &env)
	var encEnv struct{ Data []json.RawMessage }
	json.Unmarshal(encoded, &encEnv)
	for i, e := range env.Data {
		for _, q := range []string{snowplowQuery(t, e, false), snowplowQuery(t, encEnv.Data[i], false), snowplowQuery(t, encEnv.Data[i], true)} {
			d, err := decodeSnowplowQuery(q, lims(DefaultMaxEventBytes, 0))
			if err != nil || len(d.Events) != 1 {
				t.Fatalf("GET of event %d: %d events, %v %v", i, len(d.Events), d.Rejected, err)
			}
			if !bytes.Equal(d.Events[0].Body, want.Events[i].Body) || !bytes.Equal(d.Events[0].ID, want.Events[i].ID) {
				t.Errorf("GET of event %d differs from its POST", i)
			}
		}
	}
}

func TestDecodeSnowplowErrors(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{name: "empty", body: "", err: "snowplow: empty body"},
		{name: "array", body: `[{"e":"pv"}]`, err: `snowplow: body is not a JSON object: starts with '['`},
		{name: "no schema", body: `{"data":[]}`, err: `snowplow: body has no "schema"`},
		{name: "schema number", body: `{"schema":1,"data":[]}`, err: `snowplow: "schema" is a number, want a string`},
		{name: "schema 2-0-0", body: `{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/2-0-0","data":[]}`,
			err: `snowplow: unsupported schema "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/2-0-0": want iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-<n>`},
		{name: "schema no patch", body: `{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-","data":[]}`,
			err: `snowplow: unsupported schema "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-": want iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-<n>`},
		{name: "schema contexts", body: `{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1","data":[]}`,
			err: `snowplow: unsupported schema "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1": want iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-<n>`},
		{name: "schema long", body: `{"schema":"` + strings.Repeat("x", 300) + `","data":[]}`,
			err: `snowplow: unsupported schema "` + strings.Repeat("x", 100) + `": want iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-<n>`},
		{name: "no data", body: `{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"}`, err: `snowplow: body has no "data"`},
		{name: "data object", body: tp2 + `{"e":"pv"}}`, err: `snowplow: "data" is an object, want an array`},
		{name: "truncated", body: tp2 + `[{"e":"pv"}`, err: "snowplow: invalid JSON at byte 96: unexpected end of input"},
	}, noEventLimit(decodeSnowplow))
}

func TestDecodeSnowplow(t *testing.T) {
	ue := `{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0","data":{"schema":"iglu:com.acme/x/jsonschema/1-0-0","data":{"a":"<&>/é"}}}`
	co := `{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1","data":[]}`
	uePlain := `"ue_pr":` + string(jsonx.AppendQuote(nil, []byte(ue)))
	coPlain := `"co":` + string(jsonx.AppendQuote(nil, []byte(co)))
	runDecodeCases(t, []decodeCase{
		{name: "empty data", body: tp2 + `[]}`},
		{name: "schema 1-0-0", body: `{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-0","data":[{"e":"pv"}]}`, events: []string{`{"e":"pv"}`}},
		{name: "schema 1-0-12", body: `{"data":[{"e":"pv"}],"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-12"}`, events: []string{`{"e":"pv"}`}},
		{
			name:   "plain kept as is",
			body:   tp2 + `[{"e":"ue","eid":"id1",` + uePlain + `,` + coPlain + `,"tv":"js-3"}]}`,
			events: []string{`{"e":"ue","eid":"id1",` + uePlain + `,` + coPlain + `,"tv":"js-3"}`},
			ids:    []string{"id1"},
		},
		{
			name: "base64 normalized in place",
			body: tp2 + `[{"e":"ue","ue_px":"` + b64([]byte(ue), 0) + `","cx":"` + b64([]byte(co), 1) + `","eid":"a"},` +
				`{"e":"ue","ue_px":"` + b64([]byte(ue), 2) + `","cx":"` + b64([]byte(co), 3) + `"},` +
				`{"e":"ue","ue_px":"` + strings.ReplaceAll(b64([]byte(ue), 3), "/", `\/`) + `"}]}`,
			events: []string{
				`{"e":"ue",` + uePlain + `,` + coPlain + `,"eid":"a"}`,
				`{"e":"ue",` + uePlain + `,` + coPlain + `}`,
				`{"e":"ue",` + uePlain + `}`,
			},
			ids: []string{"a", "", ""},
		},
		{
			name: "bad elements cost only themselves",
			body: tp2 + `[[],{"tv":"x"},{"e":1},{"e":"ue","ue_px":1},{"e":"ue","ue_px":"!!"},{"e":"ue","ue_px":"ab-+"},` +
				`{"e":"ue","ue_px":"bm90IGpzb24"},{"e":"ue","ue_px":"WzFd"},{"e":"ue","ue_pr":"{\"a\":"},{"e":"pv","co":"[]"},` +
				`{"e":"ue","ue_px":"e30","ue_pr":"{}"},{"e":"pv","cx":"e30","co":"{}"},{"e":"pv","cx":"e30","cx":"e30"},{"e":"pv","eid":"ok"}]}`,
			events: []string{`{"e":"pv","co":"{}","co":"{}"}`, `{"e":"pv","eid":"ok"}`},
			ids:    []string{"", "ok"},
			rejected: strings.Join([]string{
				"1: invalid JSON at byte 0: not an object: starts with '['",
				`2: missing "e"`,
				`3: "e" is a number, want a string`,
				`4: "ue_px" is a number, want a string`,
				`5: "ue_px" is not valid base64: illegal base64 data at input byte 0`,
				`6: "ue_px" is not valid base64: mixes the standard and URL-safe alphabets`,
				`7: "ue_px" does not hold a JSON object: invalid JSON at byte 0: not an object: starts with 'n'`,
				`8: "ue_px" does not hold a JSON object: invalid JSON at byte 0: not an object: starts with '['`,
				`9: "ue_pr" does not hold a JSON object: invalid JSON at byte 5: unexpected end of input`,
				`10: "co" does not hold a JSON object: invalid JSON at byte 0: not an object: starts with '['`,
				`11: both "ue_px" and "ue_pr"`,
				`12: both "cx" and "co"`,
			}, "\n"),
		},
		{
			name:     "size",
			body:     tp2 + `[{"e":"pv","url":"0123456789012345678901"},{"e":"ue","ue_px":"e30"},{"e":"ue","ue_px":"` + b64([]byte(`{"":"","":""}`), 0) + `"}]}`,
			max:      40,
			events:   []string{`{"e":"ue","ue_pr":"{}"}`},
			rejected: "1: event of 41 bytes, limit 40\n3: event of 42 bytes after normalization, limit 40",
		},
		{
			name:   "pretty",
			body:   tp2 + "[\n {\n  \"e\": \"pv\",\n  \"url\": \"a b\"\n },\n {\"e\" : \"ue\",\n \"ue_px\" : \"e30\"}\n]}",
			events: []string{`{"e":"pv","url":"a b"}`, `{"e":"ue","ue_pr":"{}"}`},
		},
	}, noEventLimit(decodeSnowplow))
}

func TestDecodeSnowplowQuery(t *testing.T) {
	for _, tc := range []struct {
		query, event, id, rejected, err string
		max                             int
	}{
		{query: "", err: "snowplow: empty query: no parameters"},
		{query: "&&", err: "snowplow: empty query: no parameters"},
		{query: "=x", err: "snowplow: empty query: no parameters"},
		{query: "e=pv&x=%zz", err: `snowplow: invalid query: invalid URL escape "%zz"`},
		{query: "e%=pv", err: `snowplow: invalid query: invalid URL escape "%"`},
		{query: "e=pv&url=http%3A%2F%2Fx.com%2F%3Fa%3D1&eid=abc&page=A+B", event: `{"e":"pv","url":"http://x.com/?a=1","eid":"abc","page":"A B"}`, id: "abc"},
		{query: "=x&e=pv&&flag&eid=", event: `{"e":"pv","flag":"","eid":""}`},
		{query: "e=pv&x=%FF%22%5C%0A%01", event: "{\"e\":\"pv\",\"x\":\"\ufffd\\\"\\\\\\n\\u0001\"}"},
		{query: "e=ue&ue_px=e30&cx=eyJhIjoxfQ%3D%3D", event: `{"e":"ue","ue_pr":"{}","co":"{\"a\":1}"}`},
		{query: "e=pv&e=pv", rejected: `1: duplicate parameter "e"`},
		{query: "eid=1", rejected: `1: missing "e"`},
		{query: "e=ue&ue_px=%25%25", rejected: `1: "ue_px" is not valid base64: illegal base64 data at input byte 0`},
		{query: "e=ue&ue_pr=x", rejected: `1: "ue_pr" does not hold a JSON object: invalid JSON at byte 0: not an object: starts with 'x'`},
		{query: "e=ue&ue_px=e30&ue_pr=%7B%7D", rejected: `1: both "ue_px" and "ue_pr"`},
		{query: "e=pv&co=%7B%7D&cx=e30", rejected: `1: both "cx" and "co"`},
		{query: "e=pv&url=0123456789ab", max: 30, rejected: "1: event of 31 bytes, limit 30"},
	} {
		max := tc.max
		if max == 0 {
			max = DefaultMaxEventBytes
		}
		d, err := decodeSnowplowQuery(tc.query, lims(max, 0))
		if errorString(err) != tc.err {
			t.Errorf("%q: error %v, want %q", tc.query, err, tc.err)
			continue
		}
		var events []string
		for i, ev := range d.Events {
			checkEventBody(t, i, ev.Body, max)
			events = append(events, string(ev.Body))
			if string(ev.ID) != tc.id || (ev.ID != nil && len(ev.ID) == 0) {
				t.Errorf("%q: ID %q, want %q", tc.query, ev.ID, tc.id)
			}
		}
		if strings.Join(events, "\n") != tc.event || rejections(d.Rejected) != tc.rejected {
			t.Errorf("%q: events %q, rejected %q; want %q, %q", tc.query, events, rejections(d.Rejected), tc.event, tc.rejected)
		}
	}
}

func TestDecodeBase64(t *testing.T) {
	for _, tc := range []struct{ in, out, err string }{
		{"", "", ""},
		{"e30", "{}", ""},
		{"e30=", "{}", ""},
		{"eyJhIjoxfQ", `{"a":1}`, ""},
		{"eyJhIjoxfQ==", `{"a":1}`, ""},
		{"Pz8_", "???", ""},
		{"Pz8/", "???", ""},
		{"Pz8 ", "??>", ""},
		{"-+", "", "mixes the standard and URL-safe alphabets"},
		{"e30===", "", "illegal base64 data at input byte 3"},
		{"e", "", "illegal base64 data at input byte 0"},
		{"e3!0", "", "illegal base64 data at input byte 2"},
	} {
		got, err := decodeBase64([]byte("x"), []byte(tc.in))
		if errorString(err) != tc.err || (err == nil && string(got) != "x"+tc.out) {
			t.Errorf("decodeBase64(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.out, tc.err)
		}
	}
}
