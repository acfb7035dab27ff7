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
