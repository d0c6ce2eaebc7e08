package main

import "github.com/prometheus/client_golang/prometheus"

// diskCollector reports the spool's cap and the free space of the file
// system under the data directory, read at each scrape: what an alert on a
// spool filling or a disk nearly full divides by.
type diskCollector struct {
	dir       string
	maxBytes  int64
	max, free *prometheus.Desc
	size      *prometheus.Desc
}

func newDiskCollector(dir string, maxBytes int64) *diskCollector {
	return &diskCollector{
		dir: dir, maxBytes: maxBytes,
		max:  prometheus.NewDesc("sluice_spool_max_bytes", "The spool's cap (spool.max_bytes); 0 = none, bounded only by the disk.", nil, nil),
		free: prometheus.NewDesc("sluice_data_dir_free_bytes", "Bytes available to sluice on the file system of its data directory.", nil, nil),
		size: prometheus.NewDesc("sluice_data_dir_size_bytes", "Size of the file system of the data directory.", nil, nil),
	}
}

func (c *diskCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.max
	ch <- c.free
	ch <- c.size
}

func (c *diskCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(c.maxBytes))
	// No series when the file system cannot be read (or on a platform
	// without statfs) rather than a made-up zero.
	if free, size, ok := diskSpace(c.dir); ok {
		ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(free))
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(size))
	}
}
