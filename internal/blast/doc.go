// Package blast runs blast-radius scenarios: a node (or a naive
// one-publish-per-event client) behind an emulated link to a real NATS
// server in a child process, traffic offered per class, and one window of
// measurements a second; the suite of `sluice bench` with its figures and
// reports (JSON timelines, HTML with SVG plots, Markdown).
//
// It lives apart from package bench (the benchmarks and their results) so
// that the bench build of the sluice binary (-tags sluicebench) can run the
// suite while nothing imports bench. A binary or test binary that calls
// Scenario.Run must call ServeIfChild first thing in main or TestMain: it
// turns the process into a NATS server when an environment variable says
// so, which is why the production build of sluice does not import blast.
package blast
