package main

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// throttle is a TCP proxy between the proxy role and the agent that stands
// in for a WAN: it limits bandwidth (proxy → agent), adds latency both ways,
// cuts every connection on demand, and makes connections half-open (bytes
// stop flowing both ways while both ends stay connected).
type throttle struct {
	addr    string
	rate    atomic.Int64 // bytes per second proxy → agent, 0 = unlimited
	delay   atomic.Int64 // one-way latency, nanoseconds
	bytes   atomic.Int64 // forwarded proxy → agent
	stallAt atomic.Int64 // a connection stalls after forwarding this many bytes (0 = never)
	stalls  atomic.Int64 // connections left to stall
	stalled atomic.Int64 // connections stalled so far
	ln      net.Listener
	mu      sync.Mutex
	conns   map[net.Conn]bool
}

func startThrottle(t *testing.T, target string) *throttle {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &throttle{addr: ln.Addr().String(), ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.track(c, true)
			p.track(up, true)
			link := &link{}
			go p.pipe(up, c, link, true)
			go p.pipe(c, up, link, false)
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cutAll() })
	return p
}

func (p *throttle) setRate(bps int64)            { p.rate.Store(bps) }
func (p *throttle) setLatency(d time.Duration)   { p.delay.Store(int64(d)) }
func (p *throttle) forwarded() int64             { return p.bytes.Load() }
func (p *throttle) stallNext(n int, after int64) { p.stallAt.Store(after); p.stalls.Store(int64(n)) }

// cutAll closes every connection going through the proxy, like a network failure.
func (p *throttle) cutAll() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns)
	for c := range p.conns {
		c.Close()
	}
	return n
}

func (p *throttle) track(c net.Conn, open bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		p.conns = map[net.Conn]bool{}
	}
	if open {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

// link is the state both directions of one proxied connection share.
type link struct {
	sent    atomic.Int64 // proxy → agent
	stalled atomic.Bool
}

// pipe copies src to dst; limited is the proxy → agent direction. Each chunk
// is written one latency after it was read, by a writer of its own, so that
// latency does not limit throughput.
func (p *throttle) pipe(dst, src net.Conn, l *link, limited bool) {
	type chunk struct {
		at time.Time
		b  []byte
	}
	queue := make(chan chunk, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range queue {
			if d := time.Until(c.at.Add(time.Duration(p.delay.Load()))); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.b); err != nil {
				src.Close()
				for range queue {
				}
				return
			}
		}
	}()
	defer func() {
		close(queue)
		<-done
		dst.Close()
		src.Close()
		p.track(dst, false)
		p.track(src, false)
	}()
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			if limited {
				if after := p.stallAt.Load(); after > 0 && !l.stalled.Load() && l.sent.Add(int64(n)) > after && p.stalls.Add(-1) >= 0 {
					l.stalled.Store(true)
					p.stalled.Add(1)
				}
				if r := p.rate.Load(); r > 0 {
					time.Sleep(time.Duration(int64(n) * int64(time.Second) / r))
				}
			}
			if l.stalled.Load() {
				continue // half-open: read and drop, never close
			}
			if limited {
				p.bytes.Add(int64(n))
			}
			queue <- chunk{time.Now(), buf[:n]}
		}
		if err != nil {
			return
		}
	}
}
