// Package plan is sluice's capacity planning model: given the hops between
// an edge and its hub, the event flows that cross them at peak and the
// traffic classes they travel in (an Inventory), Evaluate says what each
// hop carries before and after sluice's batching and compression, whether
// it fits, how long events wait, what the node sends and keeps in its spool
// when demand outruns the link, and which class rates and ceilings to run
// with. `sluice plan` is this package with a YAML front end; a service can
// call Evaluate to size a deployment or to check a configuration before it
// starts a node.
//
// The package lives beside shaper, whose bottleneck model it evaluates
// (shaper.BatchRawBytes, BatchEvents, MsgCost, Utilization, MD1Wait,
// EffectiveAction) and whose compression policy it runs
// (shaper.ChooseCompression, CompressBounds, EstimateLevels), and it takes what a batch costs on the wire from wire
// (MsgOverhead, EncoderLevel), the functions the node charges and
// compresses with, so that the plan and the node cannot drift apart. It
// imports priority, shaper, wire (and the zstd encoder wire is built on, to
// measure a sample's ratio) and the standard library; nothing of the
// running node (aggregator, spool, NATS connections). design.md's graph
// keeps this direction: cmd and bench import plan, plan imports nothing
// above it.
//
// Like shaper it is pure: no goroutines, no I/O, no clock. The model is a
// steady state at peak, so no instant enters it; every input is an
// argument (a sample is bytes, not a file), and the same Inventory always
// gives the same Plan. Zero values are defaults where a default exists
// (Headroom, Link, Classes, Retry, FanOut, Subject, Node); everything else
// is checked, and Evaluate returns every problem at once, each an
// *InputError naming the field as the inventory file does
// ("flows[2].retry"), wrapping ErrInvalidInventory.
//
// # The model
//
// Per flow, the class's zstd level and batches are chosen as the node
// chooses them at the link's target (its bandwidth × Headroom): a fixed
// level is kept, in batches of at most DefaultBatchAirtime of air time;
// under compression auto the node's policy (shaper.ChooseCompression, on
// Inventory.Cores) picks the densest level the cores keep up with, in
// batches of at most DefaultBulkAirtime; always within the class's
// max_events, max_bytes and linger. A given ratio is the class's lowest
// level's, scaled to the others by the policy's priors; a sample is
// measured at the levels chosen. Each costs its
// compressed body plus OverheadBytes (wire.MsgOverhead), on every hop the
// flow crosses, times retry × fan-out. Per hop, utilization is the larger
// of bits and packets over capacity; the queue is M/D/1 with the mean
// packet as its service time. Per class, guarantees are given in priority
// order (critical first) out of the target so that Σ rate ≤ target ≤ link.
// At peak, the lanes' steady state (critical first, then guarantees, then
// borrowing, weighted fair within a priority) says what the node sends;
// what it does not send grows the spool, and the level the controller
// settles at (0, or 2 when a backlog grows) chooses each class's action.
// docs/plan.md derives each formula and works examples by hand.
//
// # Caveats
//
//   - Peak, not average: the plan is the steady state of the rates given.
//     Bursts above them, ramp-up and the estimator's probing are not
//     modelled; queue waits are M/D/1 means, not tails.
//   - The per-batch overhead counts the headers of a batch of up to 9,999
//     events with 13-digit spool ranges, the HPUB line and its reply inbox,
//     for Subject, Node and the longest class name. With Node empty it
//     assumes a 64-byte name (MaxNodeBytes), the most a host name (the
//     node's default name) can be: a node with a shorter name charges a few
//     dozen bytes less per batch, so the plan errs on the safe side.
//     Sluice-Dropped-Fields (degraded batches) is not counted.
//   - drop_fields is not modelled: the plan does not know an event's
//     fields. At a level that drops fields, growth and times to full are
//     bounds (SpoolPlan.DropFields).
//   - Spool growth is in event bytes; the caps count segment files with
//     their framing and pages, so a cap fills at least as fast as shown.
//   - The classes' byte rates and ceilings are ignored on input: they are
//     what the plan recommends. Their message rates and ceilings are kept.
//   - The compression policy is evaluated per flow at its steady state on
//     the planned target: the link as found and full, each level's ratio
//     scaled from the given one (or measured on the sample) and its speed
//     the policy's prior. The node measures both on its own batches, mixes
//     its class's flows in one meter, and starts at the lowest level until
//     its estimator finds the link; a node whose events or cores differ
//     from the priors may settle at a neighbouring level.
//   - Evaluate compresses the whole sample once or more (SampleRatio, at
//     each level the policy tries): a sample of tens of megabytes at
//     compression "best" takes seconds. Give a sample of a few thousand
//     events; the ratio settles long before.
package plan
