package observe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
)

// families are the metric families the handler must export, with their
// types. Per-class families must carry a series for every class.
var families = map[string]dto.MetricType{
	"sluice_class_ingested_events_total":                      dto.MetricType_COUNTER,
	"sluice_class_ingested_bytes_total":                       dto.MetricType_COUNTER,
	"sluice_class_refused_events_total":                       dto.MetricType_COUNTER,
	"sluice_class_published_events_total":                     dto.MetricType_COUNTER,
	"sluice_class_acked_events_total":                         dto.MetricType_COUNTER,
	"sluice_class_expired_events_total":                       dto.MetricType_COUNTER,
	"sluice_class_dropped_events_total":                       dto.MetricType_COUNTER,
	"sluice_class_batches_total":                              dto.MetricType_COUNTER,
	"sluice_class_raw_bytes_total":                            dto.MetricType_COUNTER,
	"sluice_class_wire_bytes_total":                           dto.MetricType_COUNTER,
	"sluice_class_duplicate_batches_total":                    dto.MetricType_COUNTER,
	"sluice_class_retries_total":                              dto.MetricType_COUNTER,
	"sluice_class_publish_errors_total":                       dto.MetricType_COUNTER,
	"sluice_class_retries_denied_total":                       dto.MetricType_COUNTER,
	"sluice_class_batch_splits_total":                         dto.MetricType_COUNTER,
	"sluice_class_spool_errors_total":                         dto.MetricType_COUNTER,
	"sluice_class_degraded_batches_total":                     dto.MetricType_COUNTER,
	"sluice_class_deferrals_total":                            dto.MetricType_COUNTER,
	"sluice_class_shaped_bytes_total":                         dto.MetricType_COUNTER,
	"sluice_class_in_flight_batches":                          dto.MetricType_GAUGE,
	"sluice_class_spool_events":                               dto.MetricType_GAUGE,
	"sluice_class_spool_bytes":                                dto.MetricType_GAUGE,
	"sluice_class_oldest_unsent_age_seconds":                  dto.MetricType_GAUGE,
	"sluice_class_guaranteed_rate_bytes_per_second":           dto.MetricType_GAUGE,
	"sluice_class_effective_guaranteed_rate_bytes_per_second": dto.MetricType_GAUGE,
	"sluice_class_ceiling_rate_bytes_per_second":              dto.MetricType_GAUGE,
	"sluice_class_effective_ceiling_rate_bytes_per_second":    dto.MetricType_GAUGE,
	"sluice_class_tokens_bytes":                               dto.MetricType_GAUGE,
	"sluice_class_deferred":                                   dto.MetricType_GAUGE,
	"sluice_class_end_to_end_latency_seconds":                 dto.MetricType_HISTOGRAM,

	"sluice_link_capacity_bytes_per_second":      dto.MetricType_GAUGE,
	"sluice_link_target_bytes_per_second":        dto.MetricType_GAUGE,
	"sluice_link_pacing_bytes_per_second":        dto.MetricType_GAUGE,
	"sluice_link_delivery_rate_bytes_per_second": dto.MetricType_GAUGE,
	"sluice_link_min_rtt_seconds":                dto.MetricType_GAUGE,
	"sluice_link_smoothed_rtt_seconds":           dto.MetricType_GAUGE,
	"sluice_link_cpu_delay_seconds":              dto.MetricType_GAUGE,
	"sluice_link_sched_latency_p99_seconds":      dto.MetricType_GAUGE,
	"sluice_link_error_ratio":                    dto.MetricType_GAUGE,
	"sluice_link_in_flight_bytes":                dto.MetricType_GAUGE,
	"sluice_link_degradation_level":              dto.MetricType_GAUGE,
	"sluice_link_degradation_transitions_total":  dto.MetricType_COUNTER,
	"sluice_link_degradation_signal_level":       dto.MetricType_GAUGE,
	"sluice_link_estimator_state":                dto.MetricType_GAUGE,
	"sluice_spool_bytes":                         dto.MetricType_GAUGE,
	"sluice_spool_quarantined_files_total":       dto.MetricType_COUNTER,
	"sluice_node_accepting":                      dto.MetricType_GAUGE,
	"sluice_stream_refused":                      dto.MetricType_GAUGE,

	"sluice_ingest_requests_total":              dto.MetricType_COUNTER,
	"sluice_ingest_failed_requests_total":       dto.MetricType_COUNTER,
	"sluice_ingest_unauthorized_requests_total": dto.MetricType_COUNTER,
	"sluice_ingest_accepted_events_total":       dto.MetricType_COUNTER,
	"sluice_ingest_rejected_events_total":       dto.MetricType_COUNTER,
	"sluice_ingest_duplicate_events_total":      dto.MetricType_COUNTER,
	"sluice_ingest_dropped_events_total":        dto.MetricType_COUNTER,
	"sluice_ingest_dedup_entries":               dto.MetricType_GAUGE,

	"sluice_nats_messages_total":               dto.MetricType_COUNTER,
	"sluice_nats_events_total":                 dto.MetricType_COUNTER,
	"sluice_nats_rejected_events_total":        dto.MetricType_COUNTER,
	"sluice_nats_dropped_events_total":         dto.MetricType_COUNTER,
	"sluice_nats_refused_events_total":         dto.MetricType_COUNTER,
	"sluice_nats_redelivered_messages_total":   dto.MetricType_COUNTER,
	"sluice_nats_terminated_messages_total":    dto.MetricType_COUNTER,
	"sluice_nats_slow_consumer_messages_total": dto.MetricType_COUNTER,
	"sluice_nats_busy_waits_total":             dto.MetricType_COUNTER,

	// Go runtime, process and scrape collectors.
	"go_goroutines":                          dto.MetricType_GAUGE,
	"process_cpu_seconds_total":              dto.MetricType_COUNTER,
	"promhttp_metric_handler_requests_total": dto.MetricType_COUNTER,
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	code, hdr, body := get(t, url+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want text/plain", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return mfs
}

// value returns the value of the series of mf whose labels include want
// (pairs of name, value); for a histogram, its sample count.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("no family %s", name)
	}
series:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == want[i] && l.GetValue() == want[i+1]
			}) {
				continue series
			}
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount())
		}
		t.Fatalf("%s: unexpected type %v", name, mf.GetType())
	}
	t.Fatalf("%s has no series with labels %v", name, want)
	return 0
}

// TestMetricsScrape scrapes a real node before and under load and checks
// every family is there, typed as documented, per class where it should
// be, and that the counters move.
func TestMetricsScrape(t *testing.T) {
	r := newRig(t)
	src, err := ingest.StartNATS(context.Background(), r.nc, r.ingest.Pipeline(), ingest.NATSOptions{
		Subscriptions: []ingest.Subscription{{Subject: "events.in", Class: "ingest"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	h, err := NewHandler(Sources{Node: r.node, Ingest: r.ingest, NATS: src}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	in := httptest.NewServer(r.ingest)
	defer in.Close()

	before := scrape(t, srv.URL)
	for name, typ := range families {
		mf := before[name]
		if mf == nil {
			t.Errorf("family %s missing", name)
			continue
		}
		if mf.GetType() != typ {
			t.Errorf("family %s is a %v, want %v", name, mf.GetType(), typ)
		}
		if mf.GetHelp() == "" {
			t.Errorf("family %s has no help", name)
		}
		if strings.HasPrefix(name, "sluice_class_") {
			for _, c := range classes { // every default class has a ceiling
				value(t, before, name, "class", c)
			}
		}
	}
	for _, c := range classes {
		for _, reason := range knownDropReasons {
			value(t, before, "sluice_class_dropped_events_total", "class", c, "reason", reason)
		}
	}
	for _, s := range signalNames {
		value(t, before, "sluice_link_degradation_signal_level", "signal", s)
	}
	if v := value(t, before, "sluice_class_guaranteed_rate_bytes_per_second", "class", "critical"); v != linkCeil/100*10 {
		t.Errorf("critical guaranteed rate %v, want %v (10%% of the link)", v, linkCeil/100*10)
	}
	if v := value(t, before, "sluice_node_accepting"); v != 1 {
		t.Errorf("sluice_node_accepting %v, want 1", v)
	}
	if v := value(t, before, "sluice_stream_refused"); v != 0 {
		t.Errorf("sluice_stream_refused %v, want 0: the node created its stream", v)
	}

	stop := load(t, in.URL, 20, 8*time.Second)
	for i := range 10 {
		if err := r.nc.Publish("events.in", []byte(`{"type":"track","n":`+string(rune('0'+i))+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 6*time.Second, "every class acknowledged", func() bool { return allAcked(r.node, 200) })
	waitFor(t, 3*time.Second, "the NATS events", func() bool { return src.Stats().Total.Events == 10 })
	stop()

	after := scrape(t, srv.URL)
	for _, c := range classes {
		for _, name := range []string{
			"sluice_class_ingested_events_total", "sluice_class_ingested_bytes_total",
			"sluice_class_published_events_total", "sluice_class_acked_events_total",
			"sluice_class_batches_total", "sluice_class_raw_bytes_total", "sluice_class_wire_bytes_total",
			"sluice_class_end_to_end_latency_seconds",
		} {
			if b, a := value(t, before, name, "class", c), value(t, after, name, "class", c); a <= b {
				t.Errorf("%s{class=%q} did not move under load: %v → %v", name, c, b, a)
			}
		}
		raw := value(t, after, "sluice_class_raw_bytes_total", "class", c)
		wire := value(t, after, "sluice_class_wire_bytes_total", "class", c)
		if raw <= wire {
			t.Errorf("class %s: raw %v ≤ wire %v bytes: no compression seen", c, raw, wire)
		}
	}
	for _, name := range []string{"sluice_ingest_requests_total", "sluice_ingest_accepted_events_total", "sluice_nats_events_total", "sluice_nats_messages_total"} {
		if b, a := value(t, before, name), value(t, after, name); a <= b {
			t.Errorf("%s did not move under load: %v → %v", name, b, a)
		}
	}
	// The histogram's buckets are cumulative, end at +Inf with the count,
	// and its sum is a latency (positive; how large is not this test's
	// business: no timing assertions in unit tests).
	for _, m := range after["sluice_class_end_to_end_latency_seconds"].GetMetric() {
		hist := m.GetHistogram()
		var last uint64
		for _, b := range hist.GetBucket() {
			if b.GetCumulativeCount() < last {
				t.Errorf("%v: buckets not cumulative", m.GetLabel())
			}
			last = b.GetCumulativeCount()
		}
		if last > hist.GetSampleCount() {
			t.Errorf("%v: last finite bucket %d > count %d", m.GetLabel(), last, hist.GetSampleCount())
		}
		if avg := hist.GetSampleSum() / float64(hist.GetSampleCount()); !(avg > 0) {
			t.Errorf("%v: mean latency %v s", m.GetLabel(), avg)
		}
	}

	// Readiness follows the node: 503 with the reason once it shuts down.
	if code, _, body := get(t, srv.URL+"/readyz"); code != 200 || string(body) != "ready\n" {
		t.Errorf("/readyz: %d %q, want 200 ready", code, body)
	}
	if code, _, body := get(t, srv.URL+"/healthz"); code != 200 || string(body) != "ok\n" {
		t.Errorf("/healthz: %d %q, want 200 ok", code, body)
	}
	if err := r.node.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	code, hdr, body := get(t, srv.URL+"/readyz")
	if code != 503 || !strings.Contains(string(body), "shutting down") || hdr.Get("Retry-After") == "" {
		t.Errorf("/readyz after Shutdown: %d %q (Retry-After %q), want 503 saying shutting down", code, body, hdr.Get("Retry-After"))
	}
	if code, _, _ := get(t, srv.URL+"/healthz"); code != 200 {
		t.Errorf("/healthz after Shutdown: %d, want 200", code)
	}
	final := scrape(t, srv.URL)
	if v := value(t, final, "sluice_node_accepting"); v != 0 {
		t.Errorf("sluice_node_accepting after Shutdown %v, want 0", v)
	}
}

// TestMetricsLint checks the families against Prometheus's naming and
// documentation conventions (promlint).
func TestMetricsLint(t *testing.T) {
	c, err := NewCollector(Sources{Node: newFakeNode(), Ingest: fakeIngest{}, NATS: fakeNATS{}})
	if err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(c); n < 100 {
		t.Errorf("collected %d series, want the full set", n)
	}
}

// TestStreamRefusedShown: a node that refuses its stream says so in the
// metrics and, with the reason, in the status; one that publishes does not.
func TestStreamRefusedShown(t *testing.T) {
	f := newFakeNode()
	c, err := NewCollector(Sources{Node: f})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSampler(f, SamplerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const why = `stream "SLUICE": duplicate_window 2m0s: need at least 10m0s`
	for _, refused := range []string{"", why, ""} {
		f.set(func(st *aggregator.Stats) { st.StreamRefused = refused })
		want := 0.0
		if refused != "" {
			want = 1
		}
		if got := testutil.ToFloat64(filtered{c, "sluice_stream_refused"}); got != want {
			t.Errorf("refused %q: sluice_stream_refused %v, want %v", refused, got, want)
		}
		s.sampleAt(time.Now())
		var doc Status
		if err := json.Unmarshal(s.statusJSON(), &doc); err != nil {
			t.Fatal(err)
		}
		if doc.StreamRefused != refused {
			t.Errorf("status stream_refused %q, want %q", doc.StreamRefused, refused)
		}
	}
}

// filtered is c's one family name, for testutil.ToFloat64.
type filtered struct {
	c    prometheus.Collector
	name string
}

func (f filtered) Describe(ch chan<- *prometheus.Desc) { f.c.Describe(ch) }

func (f filtered) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric)
	go func() { f.c.Collect(all); close(all) }()
	for m := range all {
		if strings.Contains(m.Desc().String(), `fqName: "`+f.name+`"`) {
			ch <- m
		}
	}
}

// TestMetricsSkipsAbsentSources: a nil or typed-nil intake exports no
// families of its own, and a missing node is an error.
func TestMetricsSkipsAbsentSources(t *testing.T) {
	var noNATS *ingest.NATSSource
	var noHandler *ingest.Handler
	c, err := NewCollector(Sources{Node: newFakeNode(), Ingest: noHandler, NATS: noNATS})
	if err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "sluice_ingest_requests_total", "sluice_nats_events_total"); n != 0 {
		t.Errorf("absent sources exported %d series", n)
	}
	if n := testutil.CollectAndCount(c, "sluice_link_degradation_level"); n != 1 {
		t.Errorf("sluice_link_degradation_level: %d series, want 1", n)
	}
	var noNode *aggregator.Node
	for _, src := range []Sources{{}, {Node: noNode}} {
		if _, err := NewCollector(src); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("NewCollector(%+v) = %v, want ErrInvalidOptions", src, err)
		}
		if _, err := NewHandler(src, Options{}); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("NewHandler(%+v) = %v, want ErrInvalidOptions", src, err)
		}
	}
}

// TestHandlerServesExtraCollectors: Options.Collectors are scraped beside
// the node's families, and one that clashes with them is refused.
func TestHandlerServesExtraCollectors(t *testing.T) {
	extra := prometheus.NewCounter(prometheus.CounterOpts{Name: "svc_orders_total", Help: "Orders."})
	extra.Add(3)
	h, err := NewHandler(Sources{Node: newFakeNode()}, Options{Collectors: []prometheus.Collector{extra}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	code, _, body := get(t, srv.URL+"/metrics")
	if code != 200 || !strings.Contains(string(body), "\nsvc_orders_total 3\n") || !strings.Contains(string(body), "sluice_link_degradation_level 0") {
		t.Errorf("/metrics: %d, want svc_orders_total 3 beside the node's families:\n%s", code, body)
	}
	clash := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_node_accepting", Help: "again"})
	if _, err := NewHandler(Sources{Node: newFakeNode()}, Options{Collectors: []prometheus.Collector{clash}}); err == nil {
		t.Error("a collector clashing with the node's families was registered")
	}
}

// TestMetricsNATSPerSubscription: the NATS counters are exported per
// subject and stream, subscriptions with the same labels summed, the
// busy waits among them.
func TestMetricsNATSPerSubscription(t *testing.T) {
	c, err := NewCollector(Sources{Node: newFakeNode(), NATS: fakeNATS{}})
	if err != nil {
		t.Fatal(err)
	}
	const want = `
# HELP sluice_nats_busy_waits_total Times a NATS subscription waited out the memory budget (limits.max_inflight_bytes) and found it still spent: a JetStream fetch not made, a JetStream batch handed back for redelivery, or a core batch held. Label stream is "" for a core subscription.
# TYPE sluice_nats_busy_waits_total counter
sluice_nats_busy_waits_total{stream="",subject="a.>"} 2
sluice_nats_busy_waits_total{stream="B",subject="b.>"} 1
# HELP sluice_nats_messages_total Messages received by NATS ingest; a redelivered JetStream message counts again. Label stream is "" for a core subscription.
# TYPE sluice_nats_messages_total counter
sluice_nats_messages_total{stream="",subject="a.>"} 4
sluice_nats_messages_total{stream="B",subject="b.>"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "sluice_nats_busy_waits_total", "sluice_nats_messages_total"); err != nil {
		t.Error(err)
	}
}
