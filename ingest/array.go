package ingest

// decodeArray decodes the body of POST /v1/events when it is a JSON array
// of objects: each element that is a JSON object of at most maxEvent bytes
// becomes an event, as it is (compacted if it spans lines); any other
// element is rejected. Events have no ID.
//
// Errors: "events: empty body", "events: body is not a JSON array: starts
// with '{'", "events: invalid JSON at byte N: …" when the array's
// structure is broken (an unterminated string, an unclosed bracket).
func decodeArray(body []byte, lim decodeLimits) (Decoded, error) {
	d := newDecoder("events", body, lim)
	if err := d.startsWith(body, '[', "array"); err != nil {
		return Decoded{}, err
	}
	return d.result(d.elements(body, 0, func(line int, raw []byte) {
		if d.scan(line, raw, nil) {
			d.keep(line, raw, nil, false)
		}
	}))
}
