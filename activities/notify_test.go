package activities

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
)

func notification() contract.Notification {
	return contract.Notification{WorkflowID: "demo-1", Result: contract.ReplicationResult{
		Job: "demo", Status: contract.StatusPartial, VMs: []contract.VMResult{
			{Name: "web01", Status: contract.StatusSuccess},
			{Name: "db01", Status: contract.StatusFailed, Error: "creating the checkpoint: host busy"},
		}}}
}

func TestWebhookGetsTheRunAsJSON(t *testing.T) {
	var got contract.Notification
	var contentType string
	fail := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail {
			fail = false
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		contentType = r.Header.Get("Content-Type")
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &got); err != nil {
			t.Error(err)
		}
	}))
	defer srv.Close()
	j := &Jobs{Config: func() (*config.Config, error) {
		return &config.Config{Notify: config.Notify{Webhook: srv.URL + "/hook"}}, nil
	}}
	err := j.Notify(context.Background(), NotifyWebhook, notification())
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("a 503 must be an error Temporal retries: %v", err)
	}
	if err := j.Notify(context.Background(), NotifyWebhook, notification()); err != nil {
		t.Fatal(err)
	}
	if contentType != "application/json" || got.WorkflowID != "demo-1" || len(got.Result.VMs) != 2 || got.Result.VMs[1].Error == "" {
		t.Fatalf("webhook got %q %+v", contentType, got)
	}
}

// fakeSMTP accepts one message the way an RFC 5321 server does (the
// commands net/smtp sends, without extensions) and returns its data.
func fakeSMTP(t *testing.T) (string, <-chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	out := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		reply := func(s string) { io.WriteString(c, s+"\r\n") }
		reply("220 fake ESMTP")
		var data strings.Builder
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.ToUpper(strings.TrimSpace(line))
			switch {
			case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
				reply("250 fake")
			case strings.HasPrefix(cmd, "DATA"):
				reply("354 go on")
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if l == ".\r\n" {
						break
					}
					data.WriteString(l)
				}
				out <- data.String()
				reply("250 queued")
			case strings.HasPrefix(cmd, "QUIT"):
				reply("221 bye")
				return
			default:
				reply("250 ok")
			}
		}
	}()
	return ln.Addr().String(), out
}

func TestMailSummary(t *testing.T) {
	addr, got := fakeSMTP(t)
	j := &Jobs{Config: func() (*config.Config, error) {
		return &config.Config{Notify: config.Notify{SMTP: config.SMTP{Address: addr, From: "replicator@example.com", To: []string{"ops@example.com"}}}}, nil
	}}
	if err := j.Notify(context.Background(), NotifySMTP, notification()); err != nil {
		t.Fatal(err)
	}
	msg := <-got
	for _, want := range []string{"Subject: [replicator] job demo: partial (1 of 2 VMs replicated)", "To: ops@example.com",
		"db01", "creating the checkpoint: host busy", `"workflowId": "demo-1"`} {
		if !strings.Contains(msg, want) {
			t.Fatalf("the mail lacks %q:\n%s", want, msg)
		}
	}
}

func TestRPONotificationGoesToEveryChannel(t *testing.T) {
	addr, mail := fakeSMTP(t)
	var got contract.RPONotification
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &got); err != nil {
			t.Error(err)
		}
	}))
	defer srv.Close()
	point := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	n := contract.RPONotification{Event: contract.RPOExceeded, Agent: "dr01", Time: point.Add(95 * time.Second),
		VMs: []contract.RPOState{{Job: "demo", VM: "web01", RPO: "30s", PointTime: &point, LagSeconds: 95}, {Job: "demo", VM: "db01", RPO: "30s"}}}
	cfg := config.Notify{Webhook: srv.URL, SMTP: config.SMTP{Address: addr, From: "replicator@example.com", To: []string{"ops@example.com"}}}
	if err := NotifyRPO(context.Background(), cfg, n); err != nil {
		t.Fatal(err)
	}
	if got.Event != contract.RPOExceeded || got.Agent != "dr01" || len(got.VMs) != 2 || got.VMs[0].PointTime == nil ||
		!got.VMs[0].PointTime.Equal(point) || got.VMs[0].LagSeconds != 95 || got.VMs[1].PointTime != nil {
		t.Fatalf("webhook got %+v", got)
	}
	msg := <-mail
	for _, want := range []string{"Subject: [replicator] 2 VM(s) past their rpo (agent dr01)", "To: ops@example.com",
		"web01", "newest point 2026-05-04T10:00:00Z, 1m35s old", "db01", "no restore point", `"event": "rpoExceeded"`} {
		if !strings.Contains(msg, want) {
			t.Fatalf("the mail lacks %q:\n%s", want, msg)
		}
	}

	// A channel that fails is an error naming it; the other still gets it.
	srv.Close()
	got = contract.RPONotification{}
	addr, mail = fakeSMTP(t)
	cfg.SMTP.Address = addr
	err := NotifyRPO(context.Background(), cfg, n)
	if err == nil || !strings.Contains(err.Error(), "notify.webhook") {
		t.Fatalf("want the webhook's failure, got %v", err)
	}
	if msg := <-mail; !strings.Contains(msg, "web01") {
		t.Fatalf("the mail was not sent when the webhook failed:\n%s", msg)
	}
}
