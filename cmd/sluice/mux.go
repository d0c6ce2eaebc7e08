package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/aggregator"
	"github.com/sluicehq/sluice/ingest"
	"github.com/sluicehq/sluice/internal/connlimit"
	"github.com/sluicehq/sluice/observe"
)

// nodeMux serves a node on one listener: the ingest endpoints, and the
// operations endpoints (metrics, health, the status page and its JSON)
// backed by a sampler it starts. stop ends the sampler. natsSrc may be nil;
// extra collectors are added to /metrics.
func nodeMux(name string, node *aggregator.Node, handler *ingest.Handler, natsSrc *ingest.NATSSource, conns *connlimit.Listener, log *slog.Logger, extra ...prometheus.Collector) (mux *http.ServeMux, stop func(), err error) {
	sampler, err := observe.NewSampler(node, observe.SamplerOptions{Name: name, Version: build().String()})
	if err != nil {
		return nil, nil, err
	}
	src := observe.Sources{Node: node, Ingest: handler}
	if natsSrc != nil {
		src.NATS = natsSrc
	}
	extra = append(extra, build().collector())
	if conns != nil {
		extra = append(extra, newConnCollector(conns))
	}
	opsHandler, err := observe.NewHandler(src, observe.Options{Sampler: sampler, Collectors: extra, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go sampler.Run(ctx)
	mux = http.NewServeMux()
	mux.Handle("/", handler)
	for _, p := range []string{"GET /metrics", "GET /healthz", "GET /readyz", "GET /{$}", "GET /api/v1/status"} {
		mux.Handle(p, opsHandler)
	}
	return mux, cancel, nil
}
