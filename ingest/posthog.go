package ingest

import (
	"fmt"

	"github.com/sluicehq/sluice/internal/jsonx"
)

// decodePostHog decodes the body of PostHog's /batch/, /capture/ and /e/,
// which accept the same shapes:
//
//	{"api_key":"…","batch":[{…},…],"sent_at":"…"}   a batch (what posthog-node sends to /batch/)
//	{"api_key":"…","event":"…","properties":{…}}    one event: an object without "batch"
//	[{…},…]                                          a bare array of events
//
// An event is a JSON object with a string "event"; its ID is "uuid". The
// write key is the envelope's "api_key", else the first event's; "api_key"
// members are stripped from the events, and an event whose key differs
// from the request's is rejected. Other envelope members ("sent_at") are
// ignored and not validated. posthog-js's form-encoded (data=…) and lz64
// bodies are not supported.
func decodePostHog(body []byte, lim decodeLimits) (Decoded, error) {
	d := newDecoder("posthog", body, lim)
	if c, ok := firstNonSpace(body); ok && c == '[' {
		return d.result(d.elements(body, 0, d.posthogEvent))
	} else if ok && c != '{' {
		return Decoded{}, d.bodyErr("body is neither a JSON object nor an array: starts with %s", describeByte(c))
	}
	if err := d.object(body); err != nil { // empty
		return Decoded{}, err
	}
	var batch, key []byte
	batchAt, keyAt := -1, -1
	err := jsonx.Members(body, func(m jsonx.Member) error {
		switch string(m.Key) {
		case "batch":
			batch, batchAt = m.Value, valueOffset(m)
		case "api_key":
			key, keyAt = m.Value, valueOffset(m)
		}
		return nil
	})
	if err != nil {
		return Decoded{}, d.syntaxErr(err, 0)
	}
	if batchAt < 0 { // one event
		d.whole = body // validated by posthogEvent's scan
		d.posthogEvent(1, trimJSONSpace(body))
		return d.result(nil)
	}
	if keyAt >= 0 {
		if err := d.bodyKey("api_key", key, keyAt); err != nil {
			return Decoded{}, err
		}
	}
	if err := d.arrayMember("batch", batch); err != nil {
		return Decoded{}, err
	}
	return d.result(d.elements(batch, batchAt, d.posthogEvent))
}

// posthogEvent decodes one event: element line of a batch, or the body.
func (d *sdkDecoder) posthogEvent(line int, raw []byte) {
	var name, id []byte
	var hasKey bool
	ok := d.scan(line, raw, func(m jsonx.Member) error {
		switch string(m.Key) {
		case "event":
			name = m.Value
		case "uuid":
			id = m.Value
		case "api_key":
			hasKey = true
		}
		return nil
	})
	if !ok {
		return
	}
	var why string
	switch {
	case name == nil:
		why = `missing "event"`
	case name[0] != '"':
		why = fmt.Sprintf(`"event" is %s, want a string`, jsonKind(name))
	case hasKey:
		why = d.eventKeys(raw, "api_key")
	}
	if why != "" {
		d.reject(line, why)
		return
	}
	if !hasKey {
		d.keep(line, raw, idValue(id), false)
		return
	}
	d.keep(line, d.build(raw, keepMember(raw, "api_key")), idValue(id), true)
}
