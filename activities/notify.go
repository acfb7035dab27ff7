package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"strings"
	"time"

	"github.com/replicator/replicator/config"
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
		return sendMail(m, mailMessage(m.From, m.To, n, body))
	}
	return nonRetryable(contract.ErrTypeBadInput, fmt.Errorf("unknown notification channel %q", channel))
}

// sendMail sends msg through notify.smtp (m.Address set).
func sendMail(m config.SMTP, msg []byte) error {
	var auth smtp.Auth
	if m.Username != "" {
		pw, err := os.ReadFile(m.PasswordFile)
		if err != nil {
			return nonRetryable(contract.ErrTypeBadConfig, fmt.Errorf("notify.smtp.passwordFile: %w", err))
		}
		host, _, _ := net.SplitHostPort(m.Address)
		auth = smtp.PlainAuth("", m.Username, strings.TrimSpace(string(pw)), host)
	}
	if err := smtp.SendMail(m.Address, auth, m.From, m.To, msg); err != nil {
		return fmt.Errorf("notify.smtp.address %s: %w", m.Address, err)
	}
	return nil
}

// NotifyRPO sends an RPO notification to every channel of the notify
// section that is set (none set: nothing, no error). It is called by the
// target agent itself, not as an activity: a breach must be told even when
// no run, and so no workflow, is going.
func NotifyRPO(ctx context.Context, cfg config.Notify, n contract.RPONotification) error {
	body, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return err
	}
	var errs []error
	if cfg.Webhook != "" {
		errs = append(errs, postWebhook(ctx, cfg.Webhook, body))
	}
	if m := cfg.SMTP; m.Address != "" {
		errs = append(errs, sendMail(m, rpoMailMessage(m.From, m.To, n, body)))
	}
	return errors.Join(errs...)
}

// rpoMailMessage is a plain-text list of the VMs, with the JSON below.
func rpoMailMessage(from string, to []string, n contract.RPONotification, body []byte) []byte {
	var b bytes.Buffer
	what, verb := "past their rpo", "is older than its job's rpo"
	if n.Event == contract.RPORecovered {
		what, verb = "within their rpo again", "is younger than its job's rpo again"
	}
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\n", from, strings.Join(to, ", "))
	fmt.Fprintf(&b, "Subject: [replicator] %d VM(s) %s (agent %s)\r\n", len(n.VMs), what, n.Agent)
	fmt.Fprintf(&b, "Date: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", n.Time.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "The newest restore point of each VM below %s (%s, agent %s).\r\n\r\n", verb, n.Time.Format(time.RFC3339), n.Agent)
	for _, vm := range n.VMs {
		age := "no restore point"
		if vm.PointTime != nil {
			age = fmt.Sprintf("newest point %s, %s old", vm.PointTime.Format(time.RFC3339), (time.Duration(vm.LagSeconds) * time.Second).String())
		}
		fmt.Fprintf(&b, "%-16s %-24s rpo %-6s %s\r\n", vm.Job, vm.VM, vm.RPO, age)
	}
	b.WriteString("\r\n")
	b.Write(bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n")))
	b.WriteString("\r\n")
	return b.Bytes()
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
