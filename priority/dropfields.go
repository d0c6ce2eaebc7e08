package priority

import (
	"bytes"
	"fmt"

	"github.com/sluicehq/sluice/internal/jsonx"
)

// DropFields removes the members at paths from one JSON object event and
// appends the result to dst. It is a single pass over the bytes: no decoding
// into maps, no allocation on the common path. It returns the patterns of
// paths that matched at least once (each once, in match order).
//
// The whole input is validated as ingest validates events: one JSON object
// (RFC 8259) with valid UTF-8 in every string, nested at most 512 deep. On malformed input the event is appended to dst unchanged and
// the error wraps ErrMalformedJSON. Members outside the rewritten objects are
// copied byte for byte; objects on a dropped path lose their insignificant
// whitespace. Duplicate keys are all dropped when they match. A nil or empty
// paths only validates and copies.
func DropFields(dst, event []byte, paths *Paths) (out []byte, dropped []string, err error) {
	return paths.Drop(dst, event, nil)
}

// Drop is DropFields appending matched patterns to dropped, so a batch can
// collect the union of its events' dropped paths without allocating per
// event (a pattern already in dropped is not appended again).
func (p *Paths) Drop(dst, event []byte, dropped []string) ([]byte, []string, error) {
	if p == nil || len(p.patterns) == 0 {
		if err := jsonx.Object(event); err != nil {
			return append(dst, event...), dropped, malformed(err)
		}
		return append(dst, event...), dropped, nil
	}
	d := dropper{out: dst, dropped: dropped, patterns: p.patterns}
	if err := d.rewrite(event, p.root, true); err != nil {
		return append(dst, event...), dropped, malformed(err)
	}
	return d.out, d.dropped, nil
}

func malformed(err error) error {
	return fmt.Errorf("%w: %w", ErrMalformedJSON, err)
}

type dropper struct {
	out      []byte
	dropped  []string
	patterns []string
}

func (d *dropper) record(idx int) {
	pat := d.patterns[idx-1]
	for _, s := range d.dropped {
		if s == pat {
			return
		}
	}
	d.dropped = append(d.dropped, pat)
}

// rewrite appends the object obj to out without the members n drops. The
// event's outer object is walked with jsonx.ObjectMembers, which validates
// it whole in the same pass; the objects below it on a path (validate
// false) are then known to be valid and only need their members listed.
func (d *dropper) rewrite(obj []byte, n *pathNode, validate bool) error {
	d.out = append(d.out, '{')
	kept := false
	fn := func(m jsonx.Member) error {
		drop := n.dropAll
		var child *pathNode
		if drop == 0 && n.children != nil {
			if child = n.child(m.Key); child != nil && child.drop != 0 {
				drop = child.drop
			}
		}
		if drop != 0 {
			d.record(drop)
			return nil
		}
		if kept {
			d.out = append(d.out, ',')
		}
		kept = true
		// The name as sent, quotes and escapes included: only white space
		// and ':' separate its closing quote from the value.
		valueStart := m.End - len(m.Value)
		keyEnd := m.Start + bytes.LastIndexByte(obj[m.Start:valueStart], '"') + 1
		d.out = append(d.out, obj[m.Start:keyEnd]...)
		d.out = append(d.out, ':')
		if child != nil && len(m.Value) > 0 && m.Value[0] == '{' {
			return d.rewrite(m.Value, child, false)
		}
		d.out = append(d.out, m.Value...)
		return nil
	}
	var err error
	if validate {
		err = jsonx.ObjectMembers(obj, fn)
	} else {
		err = jsonx.Members(obj, fn)
	}
	d.out = append(d.out, '}')
	return err
}
