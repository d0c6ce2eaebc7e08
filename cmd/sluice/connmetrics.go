package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/connlimit"
)

// connCollector exports the HTTP listener's connection limits
// (sluice_http_*) beside the node's metrics: the listener is the binary's,
// so its metrics are too.
type connCollector struct {
	l       *connlimit.Listener
	metrics []connMetric
}

type connMetric struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	val  func(connlimit.Stats) float64
}

func newConnCollector(l *connlimit.Listener) *connCollector {
	c := &connCollector{l: l}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	cn := func(name, help string, typ prometheus.ValueType, val func(connlimit.Stats) float64) {
		c.metrics = append(c.metrics, connMetric{prometheus.NewDesc("sluice_http_"+name, help, nil, nil), typ, val})
	}
	cn("connections_max", "Open HTTP connections allowed (limits.max_connections).", gauge, func(s connlimit.Stats) float64 { return float64(s.Max) })
	cn("connections_open", "Open HTTP connections.", gauge, func(s connlimit.Stats) float64 { return float64(s.Open) })
	cn("connections_idle", "Open HTTP connections between keep-alive requests.", gauge, func(s connlimit.Stats) float64 { return float64(s.Idle) })
	cn("connections_accepted_total", "Connections accepted, admitted or refused.", counter, func(s connlimit.Stats) float64 { return float64(s.Accepted) })
	cn("connections_refused_total", "Connections refused at a limit (503, or 429 over the per-address cap) with nothing idle to close.", counter, func(s connlimit.Stats) float64 { return float64(s.Refused) })
	cn("connections_refused_per_ip_total", "Connections refused over limits.max_connections_per_ip.", counter, func(s connlimit.Stats) float64 { return float64(s.RefusedPerIP) })
	cn("connections_evicted_total", "Idle keep-alive connections closed to make room for a new one.", counter, func(s connlimit.Stats) float64 { return float64(s.Evicted) })
	cn("accept_errors_total", "Temporary accept errors (such as EMFILE) waited out with backoff.", counter, func(s connlimit.Stats) float64 { return float64(s.AcceptErrors) })
	return c
}

// Describe implements prometheus.Collector.
func (c *connCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector: one snapshot of the listener.
func (c *connCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.l.Stats()
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.val(st))
	}
}
