package observe

import (
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/shaper"
)

// Collector is a prometheus.Collector that reads the sources' snapshots at
// scrape time: it keeps no state and starts no goroutine. The families it
// exports are listed in the package documentation.
type Collector struct {
	src Sources

	class   []classMetric
	dropped *prometheus.Desc // class, reason
	latency *prometheus.Desc // class (histogram)
	ceiling *prometheus.Desc // class; only classes with a byte ceiling
	tokens  *prometheus.Desc // class, bucket
	shaped  *prometheus.Desc // class, phase

	link       []linkMetric
	signal     *prometheus.Desc // signal
	probe      *prometheus.Desc // state
	spoolBytes *prometheus.Desc
	quarantine *prometheus.Desc
	accepting  *prometheus.Desc
	refused    *prometheus.Desc

	ingest []ingestMetric
	nats   []natsMetric // subject, stream
}

type classMetric struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	val  func(aggregator.ClassStats, aggregator.ClassShape) float64
}

type linkMetric struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	val  func(aggregator.LinkStats) float64
}

type ingestMetric struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	val  func(ingest.Stats) float64
}

type natsMetric struct {
	desc *prometheus.Desc
	val  func(ingest.NATSCounts) float64
}

// Drop reasons always exported (at 0 until they happen), so that rate()
// and alerts work from the first scrape. The spool's reasons and
// "too_large" (single events over the server's max payload); expiry by
// MaxAge is its own family.
var knownDropReasons = [...]string{"drop_oldest", "drop_newest", "quarantine", "too_large"}

// signalNames name the degradation signals by their index in
// aggregator.LinkStats.Signals.
var signalNames = [...]string{
	shaper.SignalInflation:  "inflation",
	shaper.SignalErrors:     "errors",
	shaper.SignalDemand:     "demand",
	shaper.SignalQueue:      "queue",
	shaper.SignalTimeToFull: "time_to_full",
}

// probeStates are the link estimator's states (shaper.ProbeState names).
var probeStates = [...]string{"startup", "cruise", "up", "probe_rtt"}

// latencyBounds are the upper bounds of the exported latency buckets: a
// power of two microseconds each (exact edges of the node's histogram),
// from 256 µs to about 9 minutes.
func latencyBounds() []time.Duration {
	var b []time.Duration
	for k := 8; k <= 29; k++ {
		b = append(b, time.Duration(1<<k)*time.Microsecond)
	}
	return b
}

// NewCollector returns a collector over src. Register it with a
// prometheus.Registry; NewHandler does so.
func NewCollector(src Sources) (*Collector, error) {
	src, err := src.check()
	if err != nil {
		return nil, err
	}
	c := &Collector{src: src}
	cl := []string{"class"}
	cd := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("sluice_class_"+name, help, cl, nil)
	}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	add := func(name, help string, typ prometheus.ValueType, val func(aggregator.ClassStats, aggregator.ClassShape) float64) {
		c.class = append(c.class, classMetric{cd(name, help), typ, val})
	}
	st := func(f func(aggregator.ClassStats) float64) func(aggregator.ClassStats, aggregator.ClassShape) float64 {
		return func(s aggregator.ClassStats, _ aggregator.ClassShape) float64 { return f(s) }
	}
	u := func(v uint64) float64 { return float64(v) }
	add("ingested_events_total", "Events accepted by Ingest and made durable in the spool.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Ingested) }))
	add("ingested_bytes_total", "Bytes of the ingested events, as spooled.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.IngestedBytes) }))
	add("refused_events_total", "Events refused by Ingest because the class's spool was full (overflow policy block).", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Refused) }))
	add("published_events_total", "Events in published batches (first sends).", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Published) }))
	add("acked_events_total", "Events acknowledged by JetStream.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Acked) }))
	add("expired_events_total", "Events older than the class's max age, not sent.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Expired) }))
	add("batches_total", "Batches published (first sends, split halves included). Events per batch: published_events_total / batches_total.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Batches) }))
	add("raw_bytes_total", "Uncompressed NDJSON bytes of the published batches. Compression ratio: raw_bytes_total / wire_bytes_total.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.RawBytes) }))
	add("wire_bytes_total", "Compressed bytes of the published batches, as sent. rate() of it is the class's actual rate; bytes per batch: wire_bytes_total / batches_total.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.WireBytes) }))
	add("compression_level", "zstd level the class's batches are compressed at now: 0 fastest, 1 default, 2 better, 3 best (chosen from the link and the cores with compression auto).", gauge, st(func(s aggregator.ClassStats) float64 {
		l, _ := shaper.ParseCompressLevel(s.Compression.Level)
		return float64(l)
	}))
	add("batch_target_bytes", "Raw (uncompressed) bytes bound of the class's next batch: its batch.max_bytes, or less so that a batch fits its air time at the link's target.", gauge, st(func(s aggregator.ClassStats) float64 { return float64(s.Compression.BatchBytes) }))
	add("compression_busy_ratio", "Fraction of the last second or more the class's compression workers spent compressing.", gauge, st(func(s aggregator.ClassStats) float64 { return s.Compression.Busy }))
	add("compression_level_changes_total", "Changes of the class's compression level by the policy (compression auto).", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Compression.Changes) }))
	add("duplicate_batches_total", "Batches JetStream reported as duplicates (already stored).", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Duplicates) }))
	add("retries_total", "Republishes of batches after a failure.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Retries) }))
	add("publish_errors_total", "Failed publish attempts.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Errors) }))
	add("retries_denied_total", "Failures whose immediate retry the retry budget, the duplicate-window horizon or the degradation level refused.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.BudgetDenied) }))
	add("batch_splits_total", "Batches split in two because the server refused their size.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Splits) }))
	add("spool_errors_total", "Failed spool reads or claims (retried).", counter, st(func(s aggregator.ClassStats) float64 { return u(s.SpoolErrors) }))
	add("degraded_batches_total", "Batches sent with low-priority fields dropped by the degradation level.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Degraded) }))
	add("deferrals_total", "Times the class was deferred by the degradation level.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.Deferrals) }))
	add("dict_id", "Id of the zstd dictionary the class's batches are compressed with now (key in the stream's dictionary bucket); 0: none.", gauge, st(func(s aggregator.ClassStats) float64 { return float64(s.Dict) }))
	add("dict_batches_total", "Batches compressed with a dictionary (format version 2).", counter, st(func(s aggregator.ClassStats) float64 { return u(s.DictBatches) }))
	add("dict_trainings_total", "Dictionary trainings started.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.DictTrainings) }))
	add("dict_train_errors_total", "Dictionary trainings that failed (too few samples, builder error, failed round trip).", counter, st(func(s aggregator.ClassStats) float64 { return u(s.DictTrainErrors) }))
	add("dict_adoptions_total", "Dictionaries written to the bucket, acknowledged and put in use.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.DictAdoptions) }))
	add("dict_publish_errors_total", "Failed writes of a dictionary to the stream's dictionary bucket; the class ships on with its last acknowledged dictionary or none.", counter, st(func(s aggregator.ClassStats) float64 { return u(s.DictPublishErrors) }))
	add("dict_ratio", "Compression ratio (raw/wire) of the class's held-out recent events in batches of its size, with the dictionary of the last training or check; 0 before.", gauge, st(func(s aggregator.ClassStats) float64 { return s.DictRatio }))
	add("dict_plain_ratio", "The same without a dictionary: the gain is dict_ratio / dict_plain_ratio.", gauge, st(func(s aggregator.ClassStats) float64 { return s.DictPlainRatio }))
	add("in_flight_batches", "Batches published and not yet acknowledged.", gauge, st(func(s aggregator.ClassStats) float64 { return float64(s.InFlight) }))
	add("spool_events", "Events spooled and not yet acknowledged (the backlog).", gauge, st(func(s aggregator.ClassStats) float64 { return u(s.Depth) }))
	add("spool_bytes", "Disk bytes of the class's spool segments.", gauge, st(func(s aggregator.ClassStats) float64 { return float64(s.SpoolBytes) }))
	add("oldest_unsent_age_seconds", "Age of the oldest unacknowledged event (0 when the backlog is empty).", gauge, st(func(s aggregator.ClassStats) float64 { return s.OldestAge.Seconds() }))
	add("guaranteed_rate_bytes_per_second", "Configured guaranteed rate (0: no guarantee).", gauge, func(_ aggregator.ClassStats, sh aggregator.ClassShape) float64 {
		return float64(sh.Rate.BytesPerSec)
	})
	add("effective_guaranteed_rate_bytes_per_second", "Guaranteed rate in force now: scaled to the link's target, 0 while the level throttles or defers the class.", gauge, func(_ aggregator.ClassStats, sh aggregator.ClassShape) float64 {
		return float64(sh.Guaranteed.BytesPerSec)
	})
	add("effective_ceiling_rate_bytes_per_second", "Ceiling in force now: the class's ceiling, or the rate the lanes share (the link's target, measured when link_mbit is 0) where that is lower or the class has none; 0 while deferred or unshaped.", gauge, func(_ aggregator.ClassStats, sh aggregator.ClassShape) float64 {
		return float64(sh.CeilNow.BytesPerSec)
	})
	add("deferred", "1 while the degradation level defers the class (it sends nothing), else 0.", gauge, func(_ aggregator.ClassStats, sh aggregator.ClassShape) float64 {
		return b2f(sh.Deferred)
	})
	c.ceiling = cd("ceiling_rate_bytes_per_second", "Configured ceiling rate, borrowing included; absent for a class bounded only by the link.")
	c.dropped = prometheus.NewDesc("sluice_class_dropped_events_total",
		"Events lost, by reason: drop_oldest and drop_newest (overflow policies), quarantine (damaged spool file), too_large (over the server's max payload).",
		[]string{"class", "reason"}, nil)
	c.latency = cd("end_to_end_latency_seconds", "Ingest to JetStream ack, per batch (its oldest event).")
	c.tokens = prometheus.NewDesc("sluice_class_tokens_bytes",
		"Bytes available now in the class's token buckets (guarantee, ceiling); negative is debt, 0 an unlimited bucket.",
		[]string{"class", "bucket"}, nil)
	c.shaped = prometheus.NewDesc("sluice_class_shaped_bytes_total",
		"Bytes the shaper admitted (wire bytes plus per-message overhead), by phase: guaranteed (within the guarantee or with strict priority) or borrowed (spare capacity).",
		[]string{"class", "phase"}, nil)

	ld := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("sluice_link_"+name, help, nil, nil)
	}
	addL := func(name, help string, typ prometheus.ValueType, val func(aggregator.LinkStats) float64) {
		c.link = append(c.link, linkMetric{ld(name, help), typ, val})
	}
	addL("capacity_bytes_per_second", "Estimated capacity of the upstream link.", gauge, func(l aggregator.LinkStats) float64 { return float64(l.Capacity) })
	addL("target_bytes_per_second", "Target rate: min(configured link ceiling, capacity) times headroom.", gauge, func(l aggregator.LinkStats) float64 { return float64(l.Target) })
	addL("pacing_bytes_per_second", "Rate the lanes are given now (the target, a probe, or a recovery's drain).", gauge, func(l aggregator.LinkStats) float64 { return float64(l.Pacing) })
	addL("delivery_rate_bytes_per_second", "Latest delivery-rate sample.", gauge, func(l aggregator.LinkStats) float64 { return float64(l.Delivery) })
	addL("min_rtt_seconds", "Minimum ack round-trip time over the last 10 s.", gauge, func(l aggregator.LinkStats) float64 { return l.MinRTT.Seconds() })
	addL("smoothed_rtt_seconds", "Smoothed ack round-trip time.", gauge, func(l aggregator.LinkStats) float64 { return l.SRTT.Seconds() })
	addL("cpu_delay_seconds", "RTT inflation the node's own CPU contention explains (scheduling latency and loopback queueing over the last 3 s); not read as the link's queue.", gauge, func(l aggregator.LinkStats) float64 { return l.CPUDelay.Seconds() })
	addL("sched_latency_p99_seconds", "Worst 1-tick 99th percentile over the last 3 s of the time the node's goroutines waited to run.", gauge, func(l aggregator.LinkStats) float64 { return l.SchedP99.Seconds() })
	addL("error_ratio", "Failed publish attempts per attempt, smoothed (0..1).", gauge, func(l aggregator.LinkStats) float64 { return l.ErrorRate })
	addL("in_flight_bytes", "Bytes published and not yet acknowledged.", gauge, func(l aggregator.LinkStats) float64 { return float64(l.InFlight) })
	addL("degradation_level", "Degradation level: 0 normal .. 3 critical traffic only.", gauge, func(l aggregator.LinkStats) float64 { return float64(l.Level) })
	addL("degradation_link_level", "The part of the degradation level the link's own health (RTT inflation, errors, down) accounts for; the rest is load. Only this part defers classes.", gauge, func(l aggregator.LinkStats) float64 { return float64(l.LinkLevel) })
	addL("degradation_recovering", "1 while the node recovers: the signals that raised the level have cleared and the backlog it built drains, at the signals' level rather than the one the dwell holds.", gauge, func(l aggregator.LinkStats) float64 {
		if l.Recovering {
			return 1
		}
		return 0
	})
	addL("degradation_transitions_total", "Changes of the degradation level.", counter, func(l aggregator.LinkStats) float64 { return float64(l.Transitions) })
	c.signal = prometheus.NewDesc("sluice_link_degradation_signal_level",
		"Level (0..3) each degradation signal asks for; the level is their maximum, held by the dwell time on the way down.",
		[]string{"signal"}, nil)
	c.probe = prometheus.NewDesc("sluice_link_estimator_state",
		"1 for the link estimator's current state (startup, cruise, up, probe_rtt), 0 for the others.",
		[]string{"state"}, nil)
	c.spoolBytes = prometheus.NewDesc("sluice_spool_bytes", "Disk bytes of the whole spool.", nil, nil)
	c.quarantine = prometheus.NewDesc("sluice_spool_quarantined_files_total", "Damaged spool files moved aside.", nil, nil)
	c.accepting = prometheus.NewDesc("sluice_node_accepting", "1 while the node accepts events (not shutting down), else 0.", nil, nil)
	c.refused = prometheus.NewDesc("sluice_stream_refused",
		"1 while the node publishes nothing to its stream because the stream breaks its promises (upstream_stream.on_mismatch: refuse; events keep spooling), else 0.", nil, nil)

	if src.Ingest != nil {
		id := func(name, help string, typ prometheus.ValueType, val func(ingest.Stats) float64) {
			c.ingest = append(c.ingest, ingestMetric{prometheus.NewDesc("sluice_ingest_"+name, help, nil, nil), typ, val})
		}
		id("requests_total", "Requests to an HTTP ingest endpoint.", counter, func(s ingest.Stats) float64 { return u(s.Requests) })
		id("failed_requests_total", "Ingest requests answered 4xx or 5xx.", counter, func(s ingest.Stats) float64 { return u(s.Failed) })
		id("unauthorized_requests_total", "Ingest requests answered 401.", counter, func(s ingest.Stats) float64 { return u(s.Unauthorized) })
		id("accepted_events_total", "Events made durable.", counter, func(s ingest.Stats) float64 { return u(s.Accepted) })
		id("rejected_events_total", "Events refused as invalid.", counter, func(s ingest.Stats) float64 { return u(s.Rejected) })
		id("duplicate_events_total", "Events dropped as client retries by the dedup window.", counter, func(s ingest.Stats) float64 { return u(s.Duplicates) })
		id("dropped_events_total", "Events refused by a full drop_newest class.", counter, func(s ingest.Stats) float64 { return u(s.Dropped) })
		id("dedup_entries", "Event ids the dedup window holds now.", gauge, func(s ingest.Stats) float64 { return float64(s.DedupEntries) })
		id("busy_requests_total", "Ingest requests answered 429 because the memory budget for requests in flight stayed spent.", counter, func(s ingest.Stats) float64 { return u(s.Busy) })
		id("too_large_requests_total", "Ingest requests answered 413: a body, a batch or its expansion over a limit.", counter, func(s ingest.Stats) float64 { return u(s.TooLarge) })
		id("inflight_bytes", "Memory the authorized requests in flight hold of the budget (limits.max_inflight_bytes, three quarters of it).", gauge, func(s ingest.Stats) float64 { return float64(s.AuthorizedBytes) })
		id("preauth_inflight_bytes", "Memory the requests whose write key has not passed yet hold of the budget (a quarter of it).", gauge, func(s ingest.Stats) float64 { return float64(s.PreAuthBytes) })
	}
	if src.NATS != nil {
		sl := []string{"subject", "stream"}
		nd := func(name, help string, val func(ingest.NATSCounts) float64) {
			c.nats = append(c.nats, natsMetric{prometheus.NewDesc("sluice_nats_"+name, help+` Label stream is "" for a core subscription.`, sl, nil), val})
		}
		nd("messages_total", "Messages received by NATS ingest; a redelivered JetStream message counts again.", func(n ingest.NATSCounts) float64 { return u(n.Messages) })
		nd("events_total", "Events from NATS made durable.", func(n ingest.NATSCounts) float64 { return u(n.Events) })
		nd("rejected_events_total", "Events from NATS not kept because invalid or too large.", func(n ingest.NATSCounts) float64 { return u(n.Rejected) })
		nd("dropped_events_total", "Events from NATS refused by a drop_newest class.", func(n ingest.NATSCounts) float64 { return u(n.Dropped) })
		nd("refused_events_total", "Events of core subscriptions lost because the node refused them.", func(n ingest.NATSCounts) float64 { return u(n.Refused) })
		nd("redelivered_messages_total", "JetStream messages handed back for redelivery because the node refused their events.", func(n ingest.NATSCounts) float64 { return u(n.Redelivered) })
		nd("terminated_messages_total", "JetStream messages terminated because no event in them was valid.", func(n ingest.NATSCounts) float64 { return u(n.Terminated) })
		nd("slow_consumer_messages_total", "Core messages the NATS client dropped at the subscription's pending limit.", func(n ingest.NATSCounts) float64 { return u(n.SlowConsumer) })
		nd("busy_waits_total", "Times a NATS subscription waited out the memory budget (limits.max_inflight_bytes) and found it still spent: a JetStream fetch not made, a JetStream batch handed back for redelivery, or a core batch held.", func(n ingest.NATSCounts) float64 { return u(n.Busy) })
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.class {
		ch <- m.desc
	}
	for _, d := range []*prometheus.Desc{c.dropped, c.latency, c.ceiling, c.tokens, c.shaped, c.signal, c.probe, c.spoolBytes, c.quarantine, c.accepting, c.refused} {
		ch <- d
	}
	for _, m := range c.link {
		ch <- m.desc
	}
	for _, m := range c.ingest {
		ch <- m.desc
	}
	for _, m := range c.nats {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector. It reads one snapshot of each
// source.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	n := c.src.Node
	st := n.Stats()
	shapes := n.Shape()
	hists := n.LatencyHistograms()
	bounds := latencyBounds()

	// Shape lists every lane in configuration order; a class only Stats
	// knows (none today) is exported with an empty shape.
	seen := make(map[string]bool, len(shapes))
	for _, sh := range shapes {
		seen[sh.Class] = true
	}
	for _, name := range slices.Sorted(maps.Keys(st.Classes)) {
		if !seen[name] {
			shapes = append(shapes, aggregator.ClassShape{Class: name})
		}
	}
	for _, sh := range shapes {
		cs, ok := st.Classes[sh.Class]
		if !ok {
			continue
		}
		name := sh.Class
		for _, m := range c.class {
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.val(cs, sh), name)
		}
		if sh.Ceil.BytesPerSec > 0 {
			ch <- prometheus.MustNewConstMetric(c.ceiling, prometheus.GaugeValue, float64(sh.Ceil.BytesPerSec), name)
		}
		ch <- prometheus.MustNewConstMetric(c.tokens, prometheus.GaugeValue, float64(sh.RateTokens), name, "guarantee")
		ch <- prometheus.MustNewConstMetric(c.tokens, prometheus.GaugeValue, float64(sh.CeilTokens), name, "ceiling")
		ch <- prometheus.MustNewConstMetric(c.shaped, prometheus.CounterValue, float64(sh.GuaranteedBytes), name, "guaranteed")
		ch <- prometheus.MustNewConstMetric(c.shaped, prometheus.CounterValue, float64(sh.BorrowedBytes), name, "borrowed")
		for reason, v := range dropReasons(cs) {
			ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(v), name, reason)
		}
		h := hists[name]
		buckets := make(map[float64]uint64, len(bounds))
		for _, b := range bounds {
			buckets[b.Seconds()] = h.Below(b)
		}
		ch <- prometheus.MustNewConstHistogram(c.latency, h.Count, h.Sum.Seconds(), buckets, name)
	}

	l := st.Link
	for _, m := range c.link {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.val(l))
	}
	for i, s := range signalNames {
		ch <- prometheus.MustNewConstMetric(c.signal, prometheus.GaugeValue, float64(l.Signals[i]), s)
	}
	for _, s := range probeStates {
		ch <- prometheus.MustNewConstMetric(c.probe, prometheus.GaugeValue, b2f(l.Probe == s), s)
	}
	ch <- prometheus.MustNewConstMetric(c.spoolBytes, prometheus.GaugeValue, float64(st.SpoolBytes))
	ch <- prometheus.MustNewConstMetric(c.quarantine, prometheus.CounterValue, float64(st.Quarantined))
	ch <- prometheus.MustNewConstMetric(c.accepting, prometheus.GaugeValue, b2f(n.Accepting()))
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.GaugeValue, b2f(st.StreamRefused != ""))

	if c.src.Ingest != nil {
		is := c.src.Ingest.Stats()
		for _, m := range c.ingest {
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.val(is))
		}
	}
	if c.src.NATS != nil {
		// Subscriptions with the same subject and stream are summed: one
		// series per label set.
		type key struct{ subject, stream string }
		var order []key
		sums := map[key]*ingest.NATSCounts{}
		for _, s := range c.src.NATS.Stats().Subscriptions {
			k := key{s.Subject, s.Stream}
			if sums[k] == nil {
				sums[k] = &ingest.NATSCounts{}
				order = append(order, k)
			}
			addNATS(sums[k], s.NATSCounts)
		}
		for _, k := range order {
			for _, m := range c.nats {
				ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, m.val(*sums[k]), k.subject, k.stream)
			}
		}
	}
}

// dropReasons returns a class's lost events by reason: the spool's, plus
// too_large, with every known reason present.
func dropReasons(cs aggregator.ClassStats) map[string]uint64 {
	out := make(map[string]uint64, len(knownDropReasons)+len(cs.Dropped))
	for _, r := range knownDropReasons {
		out[r] = 0
	}
	maps.Copy(out, cs.Dropped)
	out["too_large"] += cs.TooLarge
	return out
}

func addNATS(sum *ingest.NATSCounts, c ingest.NATSCounts) {
	sum.Messages += c.Messages
	sum.Events += c.Events
	sum.Rejected += c.Rejected
	sum.Dropped += c.Dropped
	sum.Refused += c.Refused
	sum.Redelivered += c.Redelivered
	sum.Terminated += c.Terminated
	sum.SlowConsumer += c.SlowConsumer
	sum.Busy += c.Busy
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
