package ingest

import (
	"github.com/sluicehq/sluice/internal/jsonx"
	"github.com/sluicehq/sluice/priority"
)

// An event's bytes are walked once on its way in: the door's validating
// pass (jsonx.ObjectMembers) also finds what the later steps need, so
// that neither routing nor stamping reads the event again:
//
//   - the values of the top-level members the routing rules name
//     (priority.Router.Fields), from which the event is routed at once
//     (Router.MatchValues) while its bytes are in the cache;
//   - whether it has a member named receivedAt or sluiceNode, which the
//     stamp must replace;
//   - its id (Event.ID), which the decoders of the SDK formats take from
//     the same pass for the dedup window.
//
// The result travels with the event as an eventMeta. An event the door
// changed after validating it (a member stripped or added, Snowplow's
// base64 members decoded, white space with a newline compacted) is walked
// once more, after the change, by the same collecting pass: the first
// pass's values point into bytes that are no longer the event's. An event
// that carries a stamp member is rebuilt without it, which walks its
// members again: that costs only events that forge a stamp. A rule whose
// Field has more than one segment reads within its top-level member's
// value (Router.MatchValues), not the rest of the event.

// eventMeta is what the validating pass learnt of an event for the
// pipeline. The zero value means nothing was learnt: the pipeline then
// routes and stamps as if it had not been scanned (Router.Route,
// appendStamped).
type eventMeta uint32

const (
	metaScanned eventMeta = 1 << 31 // the bits below are set
	metaForged  eventMeta = 1 << 30 // the event has a member named StampReceivedAt or StampNode
	metaRouted  eventMeta = 1 << 29 // the low bits are a rule's index + 1 (0: no rule matched)
	metaRule    eventMeta = 1<<29 - 1
)

// rule returns the index of the rule that matched, or -1 for none.
func (m eventMeta) rule() int { return int(m&metaRule) - 1 }

// scanPlan says what the validating pass collects for routing: the
// rules' top-level member names, and the router and source to route
// with. A zero plan routes nothing (the class is given, or no router).
type scanPlan struct {
	router *priority.Router
	fields []string // router.Fields()
	source string
}

// maxInlineFields is how many rule fields an eventScan holds without
// allocating.
const maxInlineFields = 8

// eventScan collects, while a door validates an event, what its plan
// asks for. It is reused for every event of a request or NATS batch.
type eventScan struct {
	plan   scanPlan
	inline [maxInlineFields][]byte
	many   [][]byte // when the plan has more fields than inline holds
	forged bool
}

func newEventScan(plan scanPlan) eventScan {
	s := eventScan{plan: plan}
	if len(plan.fields) > maxInlineFields {
		s.many = make([][]byte, len(plan.fields))
	}
	return s
}

// values returns the values found so far, one per plan field.
func (s *eventScan) values() [][]byte {
	if s.many != nil {
		return s.many
	}
	return s.inline[:len(s.plan.fields)]
}

func (s *eventScan) reset() {
	clear(s.values())
	s.forged = false
}

// member records what m, a top-level member of the event being
// validated, tells: a stamp name, or the first value of a rule's field.
func (s *eventScan) member(m jsonx.Member) error {
	// Both stamp names are 10 bytes long: most keys stop at the length.
	if len(m.Key) == len(StampReceivedAt) && (string(m.Key) == StampReceivedAt || string(m.Key) == StampNode) {
		s.forged = true
	}
	if len(s.plan.fields) > 0 {
		vals := s.values()
		for i, f := range s.plan.fields {
			if vals[i] == nil && string(m.Key) == f {
				vals[i] = m.Value
			}
		}
	}
	return nil
}

// meta returns what the members recorded since reset tell, routing the
// event with the plan's router. The values must still be the event's.
func (s *eventScan) meta() eventMeta {
	m := metaScanned
	if s.forged {
		m |= metaForged
	}
	if s.plan.router != nil {
		m |= metaRouted | eventMeta(s.plan.router.MatchValues(s.plan.source, s.values())+1)
	}
	return m
}

// validate is the validating pass: it checks that ev is one JSON object,
// as jsonx.Object does, and collects while it does; fn, when not nil,
// sees every member too (a decoder's own needs). On error what was
// collected is void.
func (s *eventScan) validate(ev []byte, fn func(m jsonx.Member) error) (eventMeta, error) {
	if traceScan != nil {
		traceScan(ev)
	}
	s.reset()
	var err error
	if fn == nil {
		err = jsonx.ObjectMembers(ev, s.member)
	} else {
		err = jsonx.ObjectMembers(ev, func(m jsonx.Member) error {
			s.member(m)
			return fn(m)
		})
	}
	if err != nil {
		return 0, err
	}
	return s.meta(), nil
}

// rescan collects the meta of ev, a valid event that its door built or
// compacted after validating its source.
func (s *eventScan) rescan(ev []byte) eventMeta {
	m, err := s.validate(ev, nil)
	if err != nil {
		return 0 // cannot happen: the pipeline then routes and stamps as before
	}
	return m
}

// traceScan, when set, is told of every walk this package makes over an
// event's bytes to validate, route or stamp it (or to rebuild it in an
// SDK decoder). Tests set it to prove that an event is walked once; it is
// nil in production.
var traceScan func(b []byte)
