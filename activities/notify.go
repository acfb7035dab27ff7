package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"strings"
	"time"

	"github.com/replicator/replicator/internal/contract"
)

// Notify channels, as JobSpec.Notify lists them.
const (
	NotifyWebhook = "webhook"
	NotifySMTP    = "smtp"
)

// Notify sends the summary of a finished run to one channel of the
// configuration's notify section. An error is retried by Temporal a few
// times; the run does not wait on it for its own outcome.
func (j *Jobs) Notify(ctx context.Context, channel string, n contract.Notification) error {
	cfg, err := j.Config()
	if err != nil {
		return nonRetryable(contract.ErrTypeBadConfig, err)
	}
	body, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return nonRetryable(contract.ErrTypeBadInput, err)
	}
	switch channel {
	case NotifyWebhook:
		if cfg.Notify.Webhook == "" {
			return nil
		}
		return postWebhook(ctx, cfg.Notify.Webhook, body)
	case NotifySMTP:
		m := cfg.Notify.SMTP
		if m.Address == "" {
			return nil
		}
		var auth smtp.Auth
		if m.Username != "" {
			pw, err := os.ReadFile(m.PasswordFile)
			if err != nil {
				return nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("notify.smtp.passwordFile: %w", err))
			}
			host, _, _ := net.SplitHostPort(m.Address)
			auth = smtp.PlainAuth("", m.Username, strings.TrimSpace(string(pw)), host)
		}
		msg := mailMessage(m.From, m.To, n, body)
		if err := smtp.SendMail(m.Address, auth, m.From, m.To, msg); err != nil {
			return fmt.Errorf("notify.smtp.address %s: %w", m.Address, err)
		}
		return nil
	}
	return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("unknown notification channel %q", channel))
}

func postWebhook(ctx context.Context, url string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("notify.webhook: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "replicator")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("notify.webhook %s: %w", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("notify.webhook %s answered %s", url, resp.Status)
	}
	return nil
}

// mailMessage is a plain-text summary, one line per VM, with the JSON below.
func mailMessage(from string, to []string, n contract.Notification, body []byte) []byte {
	var b bytes.Buffer
	ok := 0
	for _, vm := range n.Result.VMs {
		if vm.Status == contract.StatusSuccess {
			ok++
		}
	}
	status := n.Result.Status
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\n", from, strings.Join(to, ", "))
	fmt.Fprintf(&b, "Subject: [replicator] job %s: %s (%d of %d VMs replicated)\r\n", n.Result.Job, status, ok, len(n.Result.VMs))
	fmt.Fprintf(&b, "Date: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Run %s of job %s ended %s.\r\n", n.WorkflowID, n.Result.Job, status)
	if n.Error != "" {
		fmt.Fprintf(&b, "Error: %s\r\n", n.Error)
	}
	b.WriteString("\r\n")
	for _, vm := range n.Result.VMs {
		fmt.Fprintf(&b, "%-24s %-8s", vm.Name, vm.Status)
		if vm.Error != "" {
			fmt.Fprintf(&b, " %s", vm.Error)
		}
		if vm.Warning != "" {
			fmt.Fprintf(&b, " (warning: %s)", vm.Warning)
		}
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n")))
	b.WriteString("\r\n")
	return b.Bytes()
}
