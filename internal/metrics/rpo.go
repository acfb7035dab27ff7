package metrics

import (
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Replica is what the RPO metrics know of one VM's replica: its newest
// restore point's time (when the source froze its data; zero: no point
// yet) and its job's rpo (zero: none).
type Replica struct {
	Job, VM string
	Newest  time.Time
	RPO     time.Duration
}

// RPO exports, from the replicas a target agent holds, the age of every
// VM's newest restore point and whether it is past its job's rpo, computed
// when scraped, and counts breaches: a VM going from within its rpo to past
// it counts once, however long the breach lasts, when Check or a scrape
// sees it.
type RPO struct {
	list     func() ([]Replica, error)
	now      func() time.Time
	log      *slog.Logger
	age      *prometheus.Desc
	rpo      *prometheus.Desc
	exceeded *prometheus.Desc
	breaches *prometheus.CounterVec

	mu       sync.Mutex
	breached map[[2]string]bool
}

// NewRPO registers the RPO metrics with reg; list reads the replicas.
func NewRPO(reg prometheus.Registerer, list func() ([]Replica, error), logger *slog.Logger) *RPO {
	r := &RPO{
		list: list, now: time.Now, log: logger, breached: map[[2]string]bool{},
		age: prometheus.NewDesc("replicator_restore_point_age_seconds",
			"Age of the VM's newest restore point (since the source froze its data): its current RPO lag.", []string{"job", "vm"}, nil),
		rpo: prometheus.NewDesc("replicator_rpo_seconds",
			"The job's recovery point objective (jobs[].rpo), for VMs of jobs that have one.", []string{"job", "vm"}, nil),
		exceeded: prometheus.NewDesc("replicator_rpo_exceeded",
			"1 while the VM's newest restore point is older than its job's rpo (or it has none).", []string{"job", "vm"}, nil),
		breaches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "replicator", Name: "rpo_breaches_total",
			Help: "Times a VM's newest restore point became older than its job's rpo (once per breach)."}, []string{"job"}),
	}
	reg.MustRegister(r)
	return r
}

// Describe implements prometheus.Collector.
func (r *RPO) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.age
	ch <- r.rpo
	ch <- r.exceeded
	r.breaches.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *RPO) Collect(ch chan<- prometheus.Metric) {
	for _, rep := range r.Check() {
		if !rep.Newest.IsZero() {
			ch <- prometheus.MustNewConstMetric(r.age, prometheus.GaugeValue, r.now().Sub(rep.Newest).Seconds(), rep.Job, rep.VM)
		}
		if rep.RPO > 0 {
			ch <- prometheus.MustNewConstMetric(r.rpo, prometheus.GaugeValue, rep.RPO.Seconds(), rep.Job, rep.VM)
			v := 0.0
			if past(rep, r.now()) {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(r.exceeded, prometheus.GaugeValue, v, rep.Job, rep.VM)
		}
	}
	r.breaches.Collect(ch)
}

// Check reads the replicas, counts the breaches that began since the last
// check and returns the replicas.
func (r *RPO) Check() []Replica {
	reps, err := r.list()
	if err != nil {
		r.log.Error("reading the replicas for the RPO metrics", "error", err)
		return nil
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[[2]string]bool, len(reps))
	for _, rep := range reps {
		k := [2]string{rep.Job, rep.VM}
		seen[k] = true
		p := past(rep, now)
		if p && !r.breached[k] {
			r.breaches.WithLabelValues(rep.Job).Inc()
			r.log.Warn("a VM's newest restore point is older than its job's rpo", "job", rep.Job, "vm", rep.VM,
				"rpo", rep.RPO, "pointTime", rep.Newest, "age", now.Sub(rep.Newest).Round(time.Second))
		}
		r.breached[k] = p
	}
	for k := range r.breached {
		if !seen[k] {
			delete(r.breached, k)
		}
	}
	return reps
}

func past(rep Replica, now time.Time) bool { return rep.Exceeded(now) }

// Exceeded says whether, at now, the VM's job has an rpo and the VM's
// newest restore point is older than it (or it has none).
func (rep Replica) Exceeded(now time.Time) bool {
	return rep.RPO > 0 && (rep.Newest.IsZero() || now.Sub(rep.Newest) > rep.RPO)
}
