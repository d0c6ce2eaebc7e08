// Package bench measures sluice against the limits of the machine it runs
// on, always beside a baseline in the same run.
//
// The foundation benchmark (BenchmarkFoundation, see RESULTS.md) reports
// durable end-to-end throughput through the Go API — events acknowledged by
// JetStream per second with fsync before every ingest acknowledgement —
// against a naive publisher that sends one JetStream message per event, and
// the wire-bytes ratio. BenchmarkBacklogDrain (gated by SLUICE_BACKLOG_GB)
// spools a large backlog with the upstream away, then drains it and reports
// RSS and spool disk use. BenchmarkSustained (gated by
// SLUICE_BENCH_SUSTAINED=1) posts HTTP load to the sluice binary as a
// process of its own and reports events accepted and delivered per second,
// the wire ratio, and that process's peak RSS and CPU per event.
//
// The blast-radius scenarios (BenchmarkScenarios here, and the suite of
// `sluice bench`) run on package internal/blast, which the bench build of
// the sluice binary (-tags sluicebench) imports; nothing imports bench.
//
// The NATS server runs in a child process (the test binary re-executed), so
// the figures of the node's process are its own.
//
// Workloads come from the real event files in ../shared/data (see
// testdata/SOURCES.md for their origin and licences) when present, and from
// a synthetic generator otherwise.
package bench
