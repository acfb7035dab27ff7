// Package metrics exposes the data path's own Prometheus metrics (bytes read,
// sent and written, blocks skipped by reason, resumes) and serves them with
// the Temporal SDK's metrics on one /metrics endpoint.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DataPath counts what transfers do, per job. A nil *DataPath counts nothing.
type DataPath struct {
	read, sent, written *prometheus.CounterVec
	skipped             *prometheus.CounterVec
	resumes             *prometheus.CounterVec
	notApplied          *prometheus.CounterVec
}

// NewDataPath registers the data path's metrics with reg.
func NewDataPath(reg prometheus.Registerer) *DataPath {
	f := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "replicator", Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	return &DataPath{
		read:    f("bytes_read_total", "Bytes read from source disks.", "job"),
		sent:    f("bytes_sent_total", "Payload bytes sent to target agents, after compression.", "job"),
		written: f("bytes_written_total", "Bytes the target agents acknowledged as written.", "job"),
		skipped: f("blocks_skipped_total", "Blocks not sent, by reason (zero, excluded, unchanged).", "job", "reason"),
		resumes: f("transfer_resumes_total", "Transfers that resumed from an acknowledged position.", "job"),
		notApplied: f("exclusion_paths_not_applied_total",
			"Partitions whose file system exclude.paths cannot read (only NTFS is): their files are sent. Counted once per disk and run.", "job", "filesystem"),
	}
}

// ExclusionNotApplied counts a partition whose file system the job's
// exclude.paths could not be applied to.
func (m *DataPath) ExclusionNotApplied(job, filesystem string) {
	if m == nil {
		return
	}
	m.notApplied.WithLabelValues(job, filesystem).Inc()
}

// NotApplied is the counter behind ExclusionNotApplied, for tests.
func (m *DataPath) NotApplied() *prometheus.CounterVec { return m.notApplied }

// Add records the figures of one transfer attempt.
func (m *DataPath) Add(job string, read, sent, written, zero, excluded, unchanged int64, resumed bool) {
	if m == nil {
		return
	}
	m.read.WithLabelValues(job).Add(float64(read))
	m.sent.WithLabelValues(job).Add(float64(sent))
	m.written.WithLabelValues(job).Add(float64(written))
	m.skipped.WithLabelValues(job, "zero").Add(float64(zero))
	m.skipped.WithLabelValues(job, "excluded").Add(float64(excluded))
	m.skipped.WithLabelValues(job, "unchanged").Add(float64(unchanged))
	if resumed {
		m.resumes.WithLabelValues(job).Inc()
	}
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Serve serves reg on addr at /metrics until ctx ends.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err
		}
	}()
	return nil
}
