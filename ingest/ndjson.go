package ingest

import (
	"bytes"
	"fmt"

	"github.com/sluicehq/sluice/internal/jsonx"
)

// Rejection is one line of a request that was not kept.
type Rejection struct {
	Line  int    `json:"line"` // 1-based line number in the (decompressed) body
	Error string `json:"error"`
}

// parseEvents splits body into lines and validates each as one JSON
// object, collecting each event's meta with sc in the same pass (scan.go).
// It appends the good lines, trimmed of surrounding white space, to
// events and a Rejection for each bad line to rejected. Blank lines are
// skipped. The events alias body. A line holding a carriage return
// between its tokens (a bare \r, which JSON takes for white space) is
// compacted in place, as the array and SDK decoders compact theirs: an
// event is one line with neither '\n' nor '\r', whichever door it came in
// by.
func parseEvents(body []byte, maxEvent int, sc *eventScan, events []Event, rejected []Rejection) ([]Event, []Rejection) {
	return parseEventsFrom(body, 1, maxEvent, sc, events, rejected)
}

// parseEventsFrom is parseEvents for the lines of a body from line
// number first on.
func parseEventsFrom(body []byte, first, maxEvent int, sc *eventScan, events []Event, rejected []Rejection) ([]Event, []Rejection) {
	for n := first; len(body) > 0; n++ {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(line) > maxEvent {
			rejected = append(rejected, Rejection{Line: n, Error: fmt.Sprintf("event of %d bytes, limit %d", len(line), maxEvent)})
			continue
		}
		meta, err := sc.validate(line, nil)
		if err != nil {
			rejected = append(rejected, Rejection{Line: n, Error: err.Error()})
			continue
		}
		if bytes.IndexByte(line, '\r') >= 0 {
			line = jsonx.AppendCompact(line[:0], line) // never longer: in place
			meta = sc.rescan(line)
		}
		events = append(events, Event{Body: line[:len(line):len(line)], meta: meta})
	}
	return events, rejected
}

// checkEvent reports why line is not one JSON object of at most maxEvent
// bytes, or nil.
func checkEvent(line []byte, maxEvent int) error {
	if len(line) > maxEvent {
		return fmt.Errorf("event of %d bytes, limit %d", len(line), maxEvent)
	}
	return jsonx.Object(line)
}
