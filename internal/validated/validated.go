// Package validated carries events that package ingest has validated to
// the node, so that the node does not validate them again.
//
// Events has only unexported fields and lives in an internal package: code
// outside this module can neither name the type nor build a value of it
// (an unnamed struct type with the same fields is a different type, since
// unexported field names belong to their package). A method that takes an
// Events, such as aggregator.Node.IngestValid, can therefore be called
// only from inside the module, and only code that has vouched for the
// events can call it with any. That keeps the single-validation fast path
// of the ingest pipeline out of the public API: every other caller goes
// through aggregator.Node.Ingest, which validates.
//
// # Caveats
//
// The zero Events holds no events. Reflection and package unsafe can build
// anything; the guard is against mistakes, not against hostile code linked
// into the same binary.
package validated

// Events are events each of which is one JSON object on one line (no '\n'
// or '\r'), within the size limit of the pipeline that checked them.
type Events struct {
	bodies [][]byte
}

// Vouch returns bodies as Events. The caller vouches that every body
// follows the rule of Events; the node stores and ships them as they are,
// so a body that breaks it reaches consumers broken (one line holding two
// objects reaches them as two events). Only package ingest calls it, after
// its decoders checked each event.
func Vouch(bodies [][]byte) Events { return Events{bodies: bodies} }

// Bodies returns the events. The slice is the one given to Vouch.
func (e Events) Bodies() [][]byte { return e.bodies }
