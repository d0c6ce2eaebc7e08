package ingest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/sluicehq/sluice/internal/jsonx"
)

// snowplowSchema is the schema of a tp2 body but for its patch number: any
// payload_data 1-0-x is accepted.
const snowplowSchema = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-"

// decodeSnowplow decodes the body of a Snowplow tracker protocol 2 POST
// (/com.snowplowanalytics.snowplow/tp2):
//
//	{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4","data":[{…},…]}
//
// Each element of "data" is one event: a JSON object that needs a string
// "e" (the event type); its ID is "eid". Trackers send the self-describing
// event and the contexts either as JSON text ("ue_pr", "co") or as base64
// of that text ("ue_px", "cx"); the base64 forms are normalized to the
// plain ones, in place, so that both wire variants of an event give the
// same bytes:
//
//	"ue_px":"eyJzY2hlbWEiOi…"  becomes  "ue_pr":"{\"schema\":…}"
//
// The base64 may be standard or URL-safe, padded or not (a space is taken
// for the '+' that a query string turned into one). The decoded text is
// quoted as JavaScript's JSON.stringify quotes it. An element whose
// "ue_px", "ue_pr", "cx" or "co" is not a string holding one JSON object
// (after base64 decoding for the first and third) is rejected, as is one
// that has both forms of either. Other values are kept as they are: the
// schema says they are strings, but that is not checked.
func decodeSnowplow(body []byte, lim decodeLimits) (Decoded, error) {
	d := newDecoder("snowplow", body, lim)
	d.growth = 2 // ue_px and cx: base64 JSON text, decoded and quoted
	if err := d.object(body); err != nil {
		return Decoded{}, err
	}
	var schema, data []byte
	schemaAt, dataAt := -1, -1
	err := jsonx.Members(body, func(m jsonx.Member) error {
		switch string(m.Key) {
		case "schema":
			schema, schemaAt = m.Value, valueOffset(m)
		case "data":
			data, dataAt = m.Value, valueOffset(m)
		}
		return nil
	})
	if err != nil {
		return Decoded{}, d.syntaxErr(err, 0)
	}
	if schemaAt < 0 {
		return Decoded{}, d.bodyErr(`body has no "schema"`)
	}
	s, err := d.stringMember("schema", schema, schemaAt)
	if err != nil {
		return Decoded{}, err
	}
	if !validSchema(s) {
		return Decoded{}, d.bodyErr("unsupported schema %.100q: want %s<n>", string(s), snowplowSchema)
	}
	if dataAt < 0 {
		return Decoded{}, d.bodyErr(`body has no "data"`)
	}
	if err := d.arrayMember("data", data); err != nil {
		return Decoded{}, err
	}
	return d.result(d.elements(data, dataAt, d.snowplowEvent))
}

func validSchema(s []byte) bool {
	n, ok := bytes.CutPrefix(s, []byte(snowplowSchema))
	if !ok || len(n) == 0 {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// snowplowEvent decodes element line of "data".
func (d *sdkDecoder) snowplowEvent(line int, raw []byte) {
	var e, id []byte
	var why string
	var seen [4]bool // ue_px, ue_pr, cx, co
	ok := d.scan(line, raw, func(m jsonx.Member) error {
		switch string(m.Key) {
		case "e":
			e = m.Value
		case "eid":
			id = m.Value
		case "ue_px", "ue_pr", "cx", "co":
			k := embeddedIndex(m.Key)
			seen[k] = true
			if why == "" {
				why = d.checkEmbedded(embeddedNames[k], m.Value)
			}
		}
		return nil
	})
	if !ok {
		return
	}
	switch {
	case e == nil:
		why = `missing "e"`
	case e[0] != '"':
		why = fmt.Sprintf(`"e" is %s, want a string`, jsonKind(e))
	case why != "":
	case seen[0] && seen[1]:
		why = `both "ue_px" and "ue_pr"`
	case seen[2] && seen[3]:
		why = `both "cx" and "co"`
	}
	if why != "" {
		d.reject(line, why)
		return
	}
	if !seen[0] && !seen[2] {
		d.keep(line, raw, idValue(id), false)
		return
	}
	ev := d.build(raw, func(dst []byte, m jsonx.Member) []byte {
		var k string
		switch string(m.Key) {
		case "ue_px":
			k = "ue_px"
		case "cx":
			k = "cx"
		default:
			return append(dst, raw[m.Start:m.End]...)
		}
		d.unq, _ = jsonx.AppendUnquote(d.unq[:0], m.Value)
		text, _ := d.embedded(k, d.unq) // checked above
		dst = append(dst, '"')
		dst = append(dst, plainName(k)...)
		dst = append(dst, '"', ':')
		return jsonx.AppendQuote(dst, text)
	})
	d.keep(line, ev, idValue(id), true)
}

// embeddedNames are the members that hold JSON text, base64 or not.
var embeddedNames = [4]string{"ue_px", "ue_pr", "cx", "co"}

func embeddedIndex(key []byte) int {
	switch string(key) {
	case "ue_px":
		return 0
	case "ue_pr":
		return 1
	case "cx":
		return 2
	}
	return 3
}

// checkEmbedded returns why v, the raw value of member k of a valid
// event, does not hold a JSON object, or "".
func (d *sdkDecoder) checkEmbedded(k string, v []byte) string {
	if v[0] != '"' {
		return fmt.Sprintf("%q is %s, want a string", k, jsonKind(v))
	}
	if d.unq == nil {
		d.unq = make([]byte, 0, 4<<10)
	}
	d.unq, _ = jsonx.AppendUnquote(d.unq[:0], v) // a valid string
	_, why := d.embedded(k, d.unq)
	return why
}

// plainName returns the name of the plain form of the base64 member k.
func plainName(k string) string {
	if k == "ue_px" {
		return "ue_pr"
	}
	return "co"
}

// embedded returns the JSON text that s, the value of member k ("ue_px",
// "ue_pr", "cx" or "co"), holds, base64-decoded for "ue_px" and "cx", or
// why it holds no JSON object. The text is valid until the next call.
func (d *sdkDecoder) embedded(k string, s []byte) (text []byte, why string) {
	text = s
	if k == "ue_px" || k == "cx" {
		var err error
		if d.dec == nil {
			d.dec = make([]byte, 0, 4<<10)
		}
		if d.dec, err = decodeBase64(d.dec[:0], s); err != nil {
			return nil, fmt.Sprintf("%q is not valid base64: %v", k, err)
		}
		text = d.dec
	}
	if err := jsonx.Object(text); err != nil {
		return nil, fmt.Sprintf("%q does not hold a JSON object: %v", k, err)
	}
	return text, ""
}

// decodeBase64 appends to dst the bytes that s encodes in base64, standard
// or URL-safe, padded or not; a space stands for '+'.
func decodeBase64(dst, s []byte) ([]byte, error) {
	for k := 0; k < 2 && len(s) > 0 && s[len(s)-1] == '='; k++ {
		s = s[:len(s)-1]
	}
	urlSafe, std, space := false, false, false
	for _, c := range s {
		switch c {
		case '-', '_':
			urlSafe = true
		case '+', '/':
			std = true
		case ' ':
			std, space = true, true
		}
	}
	if urlSafe && std {
		return dst, errors.New("mixes the standard and URL-safe alphabets")
	}
	enc := base64.RawStdEncoding
	if urlSafe {
		enc = base64.RawURLEncoding
	}
	if space {
		s = []byte(strings.ReplaceAll(string(s), " ", "+"))
	}
	n := len(dst)
	dst = slices.Grow(dst, enc.DecodedLen(len(s)))
	m, err := enc.Decode(dst[n:n+enc.DecodedLen(len(s))], s)
	return dst[:n+m], err
}

// decodeSnowplowQuery decodes the query string of a Snowplow GET /i (the
// pixel): the parameters become one event, an object of string values in
// the order of the query, normalized as decodeSnowplow normalizes a POST
// element, so that an event sent by GET and by POST gives the same bytes.
//
// Parameters are split on '&' and decoded as url.QueryUnescape decodes
// them ('+' is a space); empty parameters and those with an empty name are
// skipped, and bytes that are not valid UTF-8 become U+FFFD. A query with a
// bad escape, or no parameter, is an error. The event is rejected (Line 1)
// when a name appears twice, "e" is missing, or as a POST element would be.
func decodeSnowplowQuery(rawQuery string, lim decodeLimits) (Decoded, error) {
	maxEvent := lim.maxEvent
	d := newDecoder("snowplow", []byte(rawQuery), lim)
	type param struct{ key, value string }
	var params []param
	for q := rawQuery; q != ""; {
		var p string
		p, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(p, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return Decoded{}, d.bodyErr("invalid query: %v", err)
		}
		value, err := url.QueryUnescape(v)
		if err != nil {
			return Decoded{}, d.bodyErr("invalid query: %v", err)
		}
		if key != "" {
			params = append(params, param{validUTF8(key), validUTF8(value)})
		}
	}
	if len(params) == 0 {
		return Decoded{}, d.bodyErr("empty query: no parameters")
	}

	seen := make(map[string]bool, len(params))
	var id []byte
	var why string
	for _, p := range params {
		switch {
		case why != "":
		case seen[p.key]:
			why = fmt.Sprintf("duplicate parameter %.40q", p.key)
		case p.key == "eid" && p.value != "":
			id = []byte(p.value)
		case p.key == "ue_px" || p.key == "ue_pr" || p.key == "cx" || p.key == "co":
			_, why = d.embedded(p.key, []byte(p.value))
		}
		seen[p.key] = true
	}
	switch {
	case why != "":
	case !seen["e"]:
		why = `missing "e"`
	case seen["ue_px"] && seen["ue_pr"]:
		why = `both "ue_px" and "ue_pr"`
	case seen["cx"] && seen["co"]:
		why = `both "cx" and "co"`
	}
	if why != "" {
		d.reject(1, why)
		return d.result(nil)
	}

	// Each byte of a parameter becomes at most six (a control character
	// sent as %01 is quoted as \u0001).
	upper := 2
	for _, p := range params {
		upper += 6*(len(p.key)+len(p.value)) + 4
	}
	if !d.room(upper) {
		return d.result(nil)
	}
	ev := append(d.ab.b, '{')
	for i, p := range params {
		if i > 0 {
			ev = append(ev, ',')
		}
		value := []byte(p.value)
		if p.key == "ue_px" || p.key == "cx" {
			value, _ = d.embedded(p.key, value) // checked above
			p.key = plainName(p.key)
		}
		ev = jsonx.AppendQuote(ev, []byte(p.key))
		ev = append(ev, ':')
		ev = jsonx.AppendQuote(ev, value)
	}
	ev = append(ev, '}')
	d.ab.b = ev
	if len(ev) > maxEvent {
		d.reject(1, fmt.Sprintf("event of %d bytes, limit %d", len(ev), maxEvent))
		return d.result(nil)
	}
	d.keep(1, ev, id, true)
	return d.result(nil)
}

// validUTF8 returns s with each byte that is not part of valid UTF-8
// replaced by U+FFFD, as encoding/json and AppendQuote replace them.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s { // an invalid byte ranges as one U+FFFD
		b.WriteRune(r)
	}
	return b.String()
}
