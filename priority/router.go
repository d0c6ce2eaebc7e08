package priority

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/internal/jsonx"
)

// Rule routes events to a class. A rule matches when Source is empty or
// equals the event's source endpoint, and Field is empty, or the value at the
// JSON path Field (dot-separated object keys, no '*') equals one of Equals.
// With Field set and Equals empty, the field's presence is enough. Strings
// compare by their decoded value; other values (numbers, true, false, null)
// by their JSON text, so Equals: ["true"] matches the boolean.
type Rule struct {
	Field  string
	Equals []string
	Source string
	Class  string
}

// Router picks a class for an event. It is immutable and safe for concurrent
// use.
//
// An explicit class given by the producer (an HTTP header, a Go API
// argument) wins over the rules; that choice is the caller's: call Route only
// when no class was given.
type Router struct {
	rules  []compiledRule
	def    string
	fields []string // the distinct first segments of the rules' paths
}

type compiledRule struct {
	Rule
	path   []string
	equals [][]byte
	slot   int // index in Router.fields of path[0]
}

// NewRouter compiles rules. When classes is non-nil, every rule's class and
// defaultClass must name one of them.
func NewRouter(classes []Class, rules []Rule, defaultClass string) (*Router, error) {
	known := func(name string) bool {
		if classes == nil {
			return name != ""
		}
		for i := range classes {
			if classes[i].Name == name {
				return true
			}
		}
		return false
	}
	if !known(defaultClass) {
		return nil, fmt.Errorf("%w: unknown default class %q", ErrInvalidRule, defaultClass)
	}
	r := &Router{def: defaultClass, rules: make([]compiledRule, 0, len(rules))}
	for i, rule := range rules {
		if !known(rule.Class) {
			return nil, fmt.Errorf("%w: rule #%d: unknown class %q", ErrInvalidRule, i, rule.Class)
		}
		cr := compiledRule{Rule: rule}
		if rule.Field != "" {
			if err := ValidatePath(rule.Field); err != nil || strings.Contains(rule.Field, "*") {
				return nil, fmt.Errorf("%w: rule #%d: field %q: %w", ErrInvalidRule, i, rule.Field, ErrInvalidPath)
			}
			cr.path = strings.Split(rule.Field, ".")
			cr.slot = slices.Index(r.fields, cr.path[0])
			if cr.slot < 0 {
				cr.slot = len(r.fields)
				r.fields = append(r.fields, cr.path[0])
			}
		} else if len(rule.Equals) > 0 {
			return nil, fmt.Errorf("%w: rule #%d: equals without a field", ErrInvalidRule, i)
		}
		for _, e := range rule.Equals {
			cr.equals = append(cr.equals, []byte(e))
		}
		r.rules = append(r.rules, cr)
	}
	return r, nil
}

// Default returns the default class.
func (r *Router) Default() string { return r.def }

// Route returns the class of the first matching rule, or the default class.
// It scans only as much of the event as the rules' fields need, without
// decoding it. Route does not validate the event (ingest has): a malformed
// event matches on whatever is well formed before its first error, and
// otherwise gets the default class. It never panics.
func (r *Router) Route(source string, event []byte) string {
	for i := range r.rules {
		cr := &r.rules[i]
		if cr.Source != "" && cr.Source != source {
			continue
		}
		if cr.path == nil {
			return cr.Class
		}
		raw, ok := Lookup(event, cr.path)
		if !ok {
			continue
		}
		if len(cr.equals) == 0 {
			return cr.Class
		}
		if valueEquals(raw, cr.equals) {
			return cr.Class
		}
	}
	return r.def
}

// Fields returns the distinct top-level member names the rules read (the
// first segment of each rule's Field), in the order [Router.MatchValues]
// takes their values; nil when no rule reads a field.
func (r *Router) Fields() []string { return slices.Clone(r.fields) }

// RouteValues is [Router.Route] for an event whose top-level members the
// caller has already found while scanning it (ingest finds them while it
// validates the event, so that the event is read once): values[i] is the
// raw value, without surrounding white space, of the first top-level
// member named Fields()[i], or nil when the event has none. On a valid
// event it returns what Route returns. A rule whose Field has more than
// one segment reads only within values[i]. values must be at least as
// long as Fields().
func (r *Router) RouteValues(source string, values [][]byte) string {
	return r.RuleClass(r.MatchValues(source, values))
}

// MatchValues returns the index of the first rule that matches the event
// whose top-level values are values (as for [Router.RouteValues]), or -1
// when none does. [Router.RuleClass] turns it into the class.
func (r *Router) MatchValues(source string, values [][]byte) int {
	for i := range r.rules {
		cr := &r.rules[i]
		if cr.Source != "" && cr.Source != source {
			continue
		}
		if cr.path == nil {
			return i
		}
		raw := values[cr.slot]
		if raw == nil {
			continue
		}
		if len(cr.path) > 1 {
			var ok bool
			if raw, ok = Lookup(raw, cr.path[1:]); !ok {
				continue
			}
		}
		if len(cr.equals) == 0 || valueEquals(raw, cr.equals) {
			return i
		}
	}
	return -1
}

// RuleClass returns the class of rule i, an index that
// [Router.MatchValues] returned, or the default class for -1.
func (r *Router) RuleClass(i int) string {
	if i < 0 || i >= len(r.rules) {
		return r.def
	}
	return r.rules[i].Class
}

func valueEquals(raw []byte, equals [][]byte) bool {
	cmp := raw
	if len(raw) > 0 && raw[0] == '"' {
		cmp = raw[1 : len(raw)-1]
		if bytes.IndexByte(cmp, '\\') >= 0 {
			var err error
			if cmp, err = jsonx.Unquote(raw); err != nil {
				return false
			}
		}
	}
	for _, e := range equals {
		if bytes.Equal(cmp, e) {
			return true
		}
	}
	return false
}

// Lookup returns the raw JSON value at path (object keys from the top level)
// in event, without decoding the event. With duplicate keys the first wins
// (encoding/json keeps the last; SDKs do not send duplicates). ok is false
// when the path is absent or the event is malformed before the value's end.
// An empty path names the whole event, which must then be a valid object.
func Lookup(event []byte, path []string) (raw []byte, ok bool) {
	if len(path) == 0 {
		if jsonx.Object(event) != nil {
			return nil, false
		}
		return bytes.TrimSpace(event), true
	}
	raw = event
	for _, seg := range path {
		found := false
		// ObjectMembers calls back only with values it has validated, so
		// a member found before a syntax error counts, as documented.
		jsonx.ObjectMembers(raw, func(m jsonx.Member) error {
			if string(m.Key) == seg {
				raw, found = m.Value, true
				return errFound
			}
			return nil
		})
		if !found {
			return nil, false
		}
	}
	return raw, true
}

// errFound stops a member walk at the member looked for.
var errFound = errors.New("found")
