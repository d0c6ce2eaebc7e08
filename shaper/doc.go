// Package shaper decides when and how much sluice sends: per-class token
// bucket lanes under a link bucket (Lanes), a link-health estimator fed by
// publish acks and errors (Estimator), a degradation controller (Controller)
// and retry policy (Retrier, Budget, Backoff, RTO). It imports only priority
// and the standard library. Every type is a pure state machine: no
// goroutines, no timers, no I/O, no clock. Every mutator and query takes
// now, and NextEventAt(now) says when an answer can next change by time
// alone, so a driver sleeps until then. Randomness is injected. Token maths
// is integer (nano-tokens, ns) so decisions are identical on amd64 and arm64.
// None of the types is safe for concurrent use: the driver holds a mutex.
//
// # Lanes (HTB-style, flat)
//
// Per class, a rate and a ceil bucket in bytes and in msgs; one link bucket
// at the target T (bytes and, optionally, msgs). Cost of a message = bytes
// + 256 B overhead, and 1 msg. A message is admitted when each relevant
// bucket holds ≥ min(cost, depth), then charged in full (bounded debt).
// Depths: max(2×64 KiB, 100 ms × rate) for classes, max(2×64 KiB, 50 ms × T)
// for the link. Order of service:
//
//  1. critical classes (strict priority), bounded by their ceil and the link;
//  2. the guaranteed phase: classes within their effective rate, by
//     priority, then weighted fair;
//  3. the borrow phase: classes within their ceil, by priority, then by
//     weight (start-time fair queuing, which is DRR with an infinitely fine
//     quantum); charged to ceil and link only, as in HTB.
//
// A better-placed class that lacks only link tokens is never overtaken.
// When T falls below the guarantees, each non-critical guarantee is scaled
// by s = clamp((T − Σ critical rate) / Σ other active rates, 0, 1) and
// Overcommitted reports it. The level's plan applies: ActionDefer stops a
// class, ActionThrottle removes its guarantee (borrow only).
//
// Two drivers: a scheduler (EnqueueAt, PickAt) or, for one goroutine per
// class, admission (SetBacklogAt, ReserveAt), where a class is admitted only
// if the link also holds the tokens of every backlogged class served before
// it. A retry is admitted exactly like a first send.
//
// # Estimator
//
// Delivery-rate sampling per draft-cheng-iccrg-delivery-rate-estimation
// (interval = max(send, ack elapsed), samples shorter than MinRtt dropped,
// app-limited marking), rounds per BBR, MaxBw = windowed max over 10 rounds
// of bandwidth-limited samples only (unlike BBR, an app-limited sample
// never raises it: a burst a bottleneck's queue passed at the line rate is
// not capacity; except in Startup, where one above MaxBw whose sends kept
// the pipe busy for MinRtt does, so that an unheld load after an idle
// minute re-measures the link), MinRtt over 10 s with a ProbeRTT-lite refresh (no drain:
// pacing at the target keeps the node's own queue empty). MinRtt and the
// rounds' minima are net of serialization: bytes × the per-byte slope of
// the minimum RTT by size class (powers of two, 10 s window), capped at
// bytes/MaxBw, floored at bytes/LinkCeil, and no sample below the smallest
// class's minimum net of its own air time. Staleness: with no held send and
// no bandwidth-limited sample for StaleAfter (20 s), C halves every
// further StaleAfter to no less than a quarter, the max filter's history is
// dropped, and the next held send re-probes from Startup, so the first
// rounds of the new load replace the aged value. SRTT/RTO per RFC 6298
// (whole RTT), error rate per round with an EWMA of 1/8. A round is
// congested at ≥ 2% errors or when its minimum RTT is ≥ 1.5 × MinRtt and ≥
// max(5 ms, 2.5·rttvar) above it (while probing up, plus a quarter of the
// probe's time so far: its own queue; in the two rounds after a probe and
// during Drain, only errors cut); then BwLo = max(bw_latest, 0.7·min(BwLo, MaxBw)), or, when the queue stood
// all round, the round's ack-clock rate (the bottleneck was busy, so that
// rate measures it). C = min(MaxBw, BwLo, LinkCeil); Target = C × Headroom
// (0.8); InflightCap = max(4 msgs, 2·(max(C, pacing)·MinRtt + a
// batch)). Probing (with a backlog, level ≤ 2): CRUISE at Target, after 2 s + U(0,1) s UP at 1.25·C until 4
// samples sent wholly inside the probe; if they reach 1.15·C (the notes say
// 1.25·MaxBw_prev; a stale MaxBw made that unreachable) STARTUP doubles the
// rate per round until growth < 25% for 3 rounds or congestion. The driver
// sets the lanes' target to PacingRateAt(now).
//
// # CPU contention (CPUSignal)
//
// A busy machine delays acks: the node's own goroutines (and a server on
// the same machine) wait for a core, and that delay looked like the
// link's queue. CPUSignal takes, per tick, the runtime's cumulative
// scheduling-latency histogram (its difference from the last tick is the
// tick's waits; quantiles from at least 16 waits, lower bucket edges)
// and, where measured, a loopback round trip to an echo in the node; over
// a 3 s window, Delay = max(4 × the lowest tick's median wait, the fastest
// loopback): floors, not peaks, since what it is taken from is a round's
// minimum RTT, which only delay every ack met can raise. The
// driver gives Delay to Estimator.SetCPUDelayAt: each round's minimum RTT
// less Delay (never below MinRtt) is what the standing-queue rule and
// Snapshot.Inflation read, so the estimator does not cut C and the
// controller's inflation signal does not raise the level for delay the
// CPU explains. The delay is subtracted, not a veto: a real queue longer
// than it still counts.
//
// # Controller
//
// Five signals map to raw levels with Schmitt hysteresis: RTT inflation
// (1.5/2.5/4, exit ×0.8), error rate (2%/10%/30%, exit ×0.5; no ack for
// max(3·RTO, 5 s) with in-flight → 3), demand ρ = smoothed pre-shedding
// ingress / Target (1/1.5, exit ×0.8; never level 3: overload is the
// spool's), a CoDel-style standing queue (target 150 ms, interval 1 s →
// 1; and backlog growing 10 s → 2), backlog
// time-to-full (30 min/5 min/30 s, exit ×2). Up: raw above the level on 2
// consecutive ticks (to the smaller of the two), LinkDown → 3 at once. Down:
// one step per dwell (10 s), only if the max raw over the last dwell is
// below the level. Re-entering a level within 60 s doubles the dwell (≤ 2
// min); 2 min without a change resets it. Tick every 250 ms.
//
// Recovery is a phase of its own (ControllerStatus.Recovering): from when
// the raw level falls below a level the dwell holds, and at level 0 until
// what a degradation left unsent (Inputs.UnsentBytes) has drained, the
// classes act at the raw level (ActLevel), not the held one: the dwell
// keeps the reported level and its anti-flap, not the drain. With
// hysteresis: ActLevel follows the raw level down at once, up only after
// it stood higher for a dwell, and the phase ends when the level rises or
// a signal stood at the level for a dwell, so a flickering signal does
// not switch it (and field dropping) on and off. A class that leaves a
// defer resumes its borrow over LanesOptions.Ramp (4 s): its guarantee at
// once, its ceiling from 1/8 of the way above the guarantee, linearly; a
// class resuming at full borrow was a burst that brought the level back.
// A recovery may drain above the target (Lanes.SetDrainAt: the node gives
// 0.95 of the capacity where the target keeps 0.8): less twice what the
// critical classes sent over the last second, never below the target, so
// the headroom goes to the drain while they send little and comes back
// with the critical send that raises their demand.
//
// # Retries
//
// Classify maps a publish Outcome to Delivered, Retry, Split (payload too
// large) or DeadLetter (no stream, sequence mismatch). Backoff is full
// jitter U(0, min(30 s, 250 ms·2ⁿ)) with the exponent clamped. Budget:
// allowed = ⌊1/s·10 s + 0.1·first sends⌋ − retries over a 10 s TTL in 1 s
// slots. Retrier combines them with max 6 attempts, a 100 s horizon (2 min
// duplicate window − 20 s) and "only critical at level 3"; a refused retry
// goes back to the durable backlog, never dropped.
//
// # Compression policy
//
// ChooseCompression picks a class's zstd level and batch size. A level L
// delivers D(L) = min(link × ratio(L), cores × speed(L)) raw bytes/s:
// the link carries its target in wire bytes, each worth ratio(L) raw
// bytes, and the class's compression workers compress speed(L) raw
// bytes/s per core. Within the class's bounds (CompressBounds: a fixed
// level, or auto between a minimum and a maximum) the level of highest
// ratio among those within 5% of the best D is chosen: fastest when the
// cores are the bottleneck (a fast link), the densest level the cores
// keep up with when the link is (fewer bytes for the same events). The
// level in use is kept until it falls 10% below the best (hysteresis).
// The batch bound is BatchRawBytes at the chosen level's ratio with
// DefaultBulkAirtime (100 ms) of air time: batch size is where most of the
// ratio is (SDK events: fastest 10.1× at 128 KiB, 11.7× at 512 KiB).
// CompressMeter measures ratio and speed per level from the class's own
// batches (EWMA, α = 1/8, bytes-weighted) and derives a level not yet
// used from the nearest measured one by measured proportions (priors:
// ratio ×1, 1.04, 1.12, 1.16; speed ×1, 0.9, 0.45, 0.11). When the link
// held no send back lately, its estimate is only what the node sent, and
// counts twice (DefaultLinkProbeGain): a node slowed by its own
// compression would otherwise never learn that the link is faster.
//
// # Caveats
//
//   - Compression policy: each class decides alone, against the whole
//     link's target and its own workers' cores, though classes share both.
//     Speed is wall time per batch, so a loaded machine (other classes,
//     the spool, other processes) reads as slower compression, which is
//     what the class gets. Without a link estimate (unshaped) an auto
//     class compresses at its minimum level in batches of its MaxBytes.
//     A batch may hold a critical batch back for up to 100 ms of air time
//     (25 ms at a fixed level), on top of the link's own queue.
//   - The guarantee scale uses the critical classes' rate, not their ceil: a
//     critical class bursting to its ceil can take others' guarantees when
//     T < ceil_crit + Σ rates. That is strict priority, by design.
//   - Admission mode trusts the driver: a class marked backlogged holds back
//     lower-placed classes until it calls ReserveAt or clears its backlog.
//     Reservation.At is a hint (asking earlier is harmless).
//   - Every publish attempt needs its own id in the Estimator (its own reply
//     inbox); stamp sends when bytes reach the socket, not at dequeue.
//   - RTT inflation mixes WAN queueing with server slowness (stream append,
//     RAFT); both mean "send less". A JetStream ack is not an fsync.
//   - The convergence figures are from the in-package simulator (10→2 MB/s:
//     C within ±20% in 3 rounds; 2→10 MB/s: found at the next probe, ≈ 1.5
//     s), not from a real network.
//   - A bandwidth-limited sample can still exceed the link's sustained rate
//     while a token-bucket bottleneck spends its burst (the first bytes of
//     a probe after idle); the max filter forgets it after 10 rounds, and a
//     standing queue cuts C to the ack rate before then.
//   - The serialization slope needs batches of two sizes (2× apart) in the
//     last 10 s; with one size only, nothing is taken out (all rounds then
//     carry the same air time, so inflation is unaffected), except
//     bytes/LinkCeil with a ceiling.
//   - An aged (stale) estimate lowers Target, so the first second of a load
//     after a long idle sees a smaller target than the link has: batches
//     are cut smaller and demand over Target reads higher until the
//     re-probe's Startup has measured the link (about half a second on the
//     emulated 4 and 20 Mbit/s links).
//   - The CPU delay's 4 hops per ack are proposed, not measured, and the
//     scheduling latencies are the node's process only: a server on the
//     same machine is assumed to wait about as long. On a busy machine a
//     real queue shorter than the CPU delay goes unseen. A first version
//     built on peaks (4 × the worst tick's p99, the slowest loopback)
//     excused 60–270 ms on a machine with a load of 20 on 2 cores and hid
//     a step from 20 to 5 Mbit/s entirely.
//   - SnapshotAt, PacingRateAt and the Set…At methods run time-driven
//     transitions (probe timers); call them with non-decreasing times.
package shaper
