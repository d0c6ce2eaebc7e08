// Package observe exposes a running sluice node to people and to
// Prometheus: a prometheus.Collector over a *aggregator.Node (and, where
// present, its HTTP and NATS intake), and an http.Handler serving metrics,
// health and readiness checks, and a live status page with its JSON. A
// service that embeds a node mounts the handler on its own mux, or
// registers the Collector in its own registry; `sluice run` serves the
// same handler, so the metric names are the same everywhere.
//
//	sampler, err := observe.NewSampler(node, observe.SamplerOptions{Name: "edge-1"})
//	...
//	go sampler.Run(ctx) // the caller owns the one goroutine; cancel ctx to stop it
//	h, err := observe.NewHandler(observe.Sources{Node: node, Ingest: handler, NATS: natsSource},
//		observe.Options{Sampler: sampler, Logger: log})
//	...
//	http.ListenAndServe(":9090", h)
//
// or, metrics only, into a registry of the service's:
//
//	col, err := observe.NewCollector(observe.Sources{Node: node})
//	...
//	registry.MustRegister(col)
//
// # Endpoints
//
//	GET /metrics         Prometheus exposition (text by default)
//	GET /healthz         200 "ok" while the process serves HTTP
//	GET /readyz          200 "ready" while the node accepts events; 503 "not ready: <reason>" while it shuts down or its spool's disk is full
//	GET /                the status page: one HTML file, inline CSS and JS, no external assets
//	GET /api/v1/status   the page's data, a Status document (schema in status.go)
//
// # Metrics
//
// A Collector reads the sources' snapshots (Node.Stats, Node.Shape,
// Node.LatencyHistograms, ingest and NATS stats) at scrape time; it keeps
// no state and starts no goroutine. Names follow Prometheus conventions:
// prefix sluice_, _total on counters, base units (seconds, bytes). Per
// class (label class):
//
//	sluice_class_ingested_events_total                  counter
//	sluice_class_ingested_bytes_total                   counter
//	sluice_class_refused_events_total                   counter   spool full, producer told (429)
//	sluice_class_published_events_total                 counter
//	sluice_class_acked_events_total                     counter
//	sluice_class_expired_events_total                   counter   older than MaxAge, not sent
//	sluice_class_dropped_events_total{reason}           counter   drop_oldest, drop_newest, quarantine, too_large
//	sluice_class_batches_total                          counter
//	sluice_class_raw_bytes_total                        counter   uncompressed NDJSON of published batches
//	sluice_class_wire_bytes_total                       counter   compressed, as sent
//	sluice_class_duplicate_batches_total                counter
//	sluice_class_retries_total                          counter
//	sluice_class_publish_errors_total                   counter
//	sluice_class_retries_denied_total                   counter
//	sluice_class_batch_splits_total                     counter
//	sluice_class_spool_errors_total                     counter
//	sluice_class_degraded_batches_total                 counter
//	sluice_class_deferrals_total                        counter
//	sluice_class_shaped_bytes_total{phase}              counter   guaranteed, borrowed
//	sluice_class_dict_batches_total                     counter   compressed with a dictionary
//	sluice_class_dict_trainings_total                   counter
//	sluice_class_dict_train_errors_total                counter
//	sluice_class_dict_adoptions_total                   counter   published, acknowledged, in use
//	sluice_class_dict_publish_errors_total              counter   bucket unreachable or refused
//	sluice_class_dict_id                                gauge     dictionary in use, 0 = none
//	sluice_class_dict_ratio                             gauge     held-out ratio with the dictionary
//	sluice_class_dict_plain_ratio                       gauge     and without
//	sluice_class_in_flight_batches                      gauge
//	sluice_class_spool_events                           gauge     backlog
//	sluice_class_spool_bytes                            gauge
//	sluice_class_oldest_unsent_age_seconds              gauge
//	sluice_class_guaranteed_rate_bytes_per_second       gauge     configured
//	sluice_class_effective_guaranteed_rate_bytes_per_second gauge in force now
//	sluice_class_ceiling_rate_bytes_per_second          gauge     configured; absent when the link is the only bound
//	sluice_class_effective_ceiling_rate_bytes_per_second gauge    in force now: the class's ceiling or the link's rate, whichever is lower
//	sluice_class_tokens_bytes{bucket}                   gauge     guarantee, ceiling
//	sluice_class_deferred                               gauge     0 or 1
//	sluice_class_end_to_end_latency_seconds             histogram ingest → JetStream ack, per batch
//
// Batch size and compression are counters, from which averages derive
// over any range: events per batch = rate(published_events_total) /
// rate(batches_total); bytes per batch = rate(wire_bytes_total) /
// rate(batches_total) (raw_bytes_total for uncompressed); compression ratio
// = rate(raw_bytes_total) / rate(wire_bytes_total). The actual rate of a
// class, to compare with its guaranteed and ceiling gauges, is
// rate(sluice_class_wire_bytes_total[1m]).
//
// The latency histogram's buckets are the node's own, one per doubling
// from 256 µs to about 9 minutes (powers of two microseconds, where the
// node's finer buckets have exact edges), so histogram_quantile is within
// a factor of two bucket; the status page's quantiles use all the node's
// buckets (about 10%).
//
// Per link, and the node:
//
//	sluice_link_capacity_bytes_per_second               gauge     estimated
//	sluice_link_target_bytes_per_second                 gauge     min(ceiling, capacity) × headroom
//	sluice_link_pacing_bytes_per_second                 gauge
//	sluice_link_delivery_rate_bytes_per_second          gauge
//	sluice_link_min_rtt_seconds                         gauge
//	sluice_link_smoothed_rtt_seconds                    gauge
//	sluice_link_cpu_delay_seconds                       gauge     RTT inflation the node's CPU explains (not the link's queue)
//	sluice_link_sched_latency_p99_seconds               gauge     goroutine scheduling delay, p99
//	sluice_link_error_ratio                             gauge     failed attempts per attempt, smoothed
//	sluice_link_in_flight_bytes                         gauge
//	sluice_link_degradation_level                       gauge     0..3
//	sluice_link_degradation_link_level                  gauge     0..3, the part of the level from link health (only it defers)
//	sluice_link_degradation_recovering                  gauge     1 while the backlog drains after the signals cleared
//	sluice_link_degradation_transitions_total           counter
//	sluice_link_degradation_signal_level{signal}        gauge     inflation, errors, demand, queue, time_to_full
//	sluice_link_estimator_state{state}                  gauge     1 for the current of startup, cruise, up, probe_rtt
//	sluice_spool_bytes                                  gauge
//	sluice_spool_quarantined_files_total                counter
//	sluice_node_accepting                               gauge     0 or 1
//	sluice_stream_refused                               gauge     1 while the node refuses its stream (it breaks a promise)
//
// With Sources.Ingest (HTTP intake):
//
//	sluice_ingest_requests_total, sluice_ingest_failed_requests_total,
//	sluice_ingest_unauthorized_requests_total, sluice_ingest_accepted_events_total,
//	sluice_ingest_rejected_events_total, sluice_ingest_duplicate_events_total,
//	sluice_ingest_dropped_events_total, sluice_ingest_busy_requests_total (429: the
//	memory budget spent), sluice_ingest_too_large_requests_total (413) (counters);
//	sluice_ingest_dedup_entries, sluice_ingest_inflight_bytes,
//	sluice_ingest_preauth_inflight_bytes (gauges)
//
// With Sources.NATS (NATS intake), counters labelled subject and stream:
//
//	sluice_nats_messages_total, sluice_nats_events_total, sluice_nats_rejected_events_total,
//	sluice_nats_dropped_events_total, sluice_nats_refused_events_total,
//	sluice_nats_redelivered_messages_total, sluice_nats_terminated_messages_total,
//	sluice_nats_slow_consumer_messages_total, sluice_nats_busy_waits_total (the memory
//	budget spent)
//
// NewHandler's registry adds the Go runtime (go_*), process (process_*)
// and scrape (promhttp_*) collectors, and Options.Collectors: `sluice run`
// adds its HTTP listener's connection limits there (sluice_http_*).
//
// # Status page
//
// A Sampler samples the node every SamplerOptions.Interval (1 s), keeps
// SamplerOptions.History (5 minutes) of points, and derives a Status:
// per lane the actual rate against the guarantee and ceiling in force
// (what the lanes enforce now, beside the configured ones) and how the
// class gets capacity (strict, guaranteed, by priority, leftover,
// deferred), backlog, oldest age, drops and windowed latency quantiles;
// the link's capacity, target and RTT; and the level's history. With a
// link of unknown capacity (link_mbit 0, the default) the configured
// rates are all 0 and the page says so: every class is served by
// priority, bounded by the link's measured rate. The page polls it
// every interval and draws the lanes, the level strip and a rate chart
// (SVG, drawn by its script).
//
// # Caveats
//
//   - Rates on the page are averages over SamplerOptions.Window (5 s) from
//     counter deltas; right after start they cover less, and the first
//     sample's are 0.
//   - Prometheus counters count since the node started; a restart resets
//     them, which rate() handles.
//   - The Collector reads Node.Stats at every scrape, which reads the
//     oldest record of each class from the spool: scrape every few
//     seconds, not in a tight loop.
//   - /healthz says only that the process serves HTTP. /readyz turns 503
//     when Shutdown begins, so a load balancer stops sending before the
//     node refuses events, and while the spool's disk is full (ingest
//     answers 503 then too); it comes back by itself once there is room
//     (Node.DiskFull checks for it at most once a second). It does not
//     judge the upstream link (the spool is there to ride out its outages;
//     watch the level and the backlog).
package observe
