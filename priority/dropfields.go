package priority

// DropFields removes the members at paths from one JSON object event and
// appends the result to dst. It is a single pass over the bytes: no decoding
// into maps, no allocation on the common path. It returns the patterns of
// paths that matched at least once (each once, in match order).
//
// The whole input is validated as strictly as json.Valid; the top level must
// be an object. On malformed input the event is appended to dst unchanged and
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
	d := dropper{scanner: scanner{src: event}, out: dst, dropped: dropped}
	if p != nil {
		d.patterns = p.patterns
	}
	var root *pathNode
	if p != nil && len(p.patterns) > 0 {
		root = p.root
	}
	if err := d.run(root); err != nil {
		return append(dst, event...), dropped, err
	}
	return d.out, d.dropped, nil
}

type dropper struct {
	scanner
	out      []byte
	dropped  []string
	patterns []string
}

func (d *dropper) run(root *pathNode) error {
	d.ws()
	if d.peek() != '{' {
		return d.fail("event is not a JSON object")
	}
	if root == nil {
		start := d.pos
		if err := d.object(1); err != nil {
			return err
		}
		d.out = append(d.out, d.src[start:d.pos]...)
	} else if err := d.rewrite(root, 1); err != nil {
		return err
	}
	d.ws()
	if d.pos != len(d.src) {
		return d.fail("data after the event")
	}
	return nil
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

// rewrite copies the object at pos to out without the members n drops.
func (d *dropper) rewrite(n *pathNode, depth int) error {
	if depth > maxDepth {
		return d.fail("nesting too deep")
	}
	d.pos++
	d.out = append(d.out, '{')
	d.ws()
	if d.peek() == '}' {
		d.pos++
		d.out = append(d.out, '}')
		return nil
	}
	kept := false
	for {
		if d.peek() != '"' {
			return d.fail("object key must be a string")
		}
		kStart := d.pos
		esc, high, err := d.str()
		if err != nil {
			return err
		}
		kEnd := d.pos
		d.ws()
		if d.peek() != ':' {
			return d.fail("missing ':' after object key")
		}
		d.pos++
		d.ws()

		drop := n.dropAll
		var child *pathNode
		if drop == 0 && n.children != nil {
			raw := d.src[kStart:kEnd]
			if k, slow := keyString(raw, esc, high); slow {
				child = n.children[k]
			} else {
				child = n.children[string(raw[1:len(raw)-1])]
			}
			if child != nil && child.drop != 0 {
				drop = child.drop
			}
		}
		switch {
		case drop != 0:
			if err := d.value(depth); err != nil {
				return err
			}
			d.record(drop)
		default:
			if kept {
				d.out = append(d.out, ',')
			}
			kept = true
			d.out = append(d.out, d.src[kStart:kEnd]...)
			d.out = append(d.out, ':')
			if child != nil && d.peek() == '{' {
				if err := d.rewrite(child, depth+1); err != nil {
					return err
				}
			} else {
				vStart := d.pos
				if err := d.value(depth); err != nil {
					return err
				}
				d.out = append(d.out, d.src[vStart:d.pos]...)
			}
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.pos++
			d.ws()
		case '}':
			d.pos++
			d.out = append(d.out, '}')
			return nil
		default:
			return d.fail("missing ',' or '}' in object")
		}
	}
}
