package main

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/converter"

	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/testkit"
)

// dumpDOM loads a page in headless Chromium and returns the DOM after its
// scripts ran.
func dumpDOM(t *testing.T, chromium, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=20000", "--dump-dom", url).Output()
	if err != nil {
		t.Fatalf("chromium %s: %v", url, err)
	}
	return string(out)
}

// TestWebUIShowsVMNames loads the Temporal Web UI's workflow list and a
// run's page in a real browser and finds the VM names there.
func TestWebUIShowsVMNames(t *testing.T) {
	chromium := testkit.RequireTool(t, "chromium")
	ui := testkit.FreeAddr(t)
	h := newHarnessUI(t, roleSet{jobs: true, proxy: true, target: true}, false, nil, ui)
	if err := registerSearchAttributes(context.Background(), h.c, "default"); err != nil {
		t.Fatal(err)
	}
	res := h.run(contract.ReplicationInput{Job: "demo"})
	requireSuccess(t, res)

	// The run's page names its VMs (its details, its children's summaries).
	run := dumpDOM(t, chromium, "http://"+ui+"/namespaces/default/workflows/"+h.lastID+"/"+res.RunID+"/history")
	for _, vm := range res.VMs {
		if !strings.Contains(run, vm.Name) {
			t.Errorf("the run's page does not name VM %s", vm.Name)
		}
	}
	// The workflow list finds a VM's runs by its name: ReplicatorVM = 'web01'
	// lists web01's workflow and not db01's; its page names the VM.
	ids := vmIDs(t, h)
	query := url.QueryEscape(`ReplicatorVM="web01"`)
	list := dumpDOM(t, chromium, "http://"+ui+"/namespaces/default/workflows?query="+query)
	web, db := contract.VMWorkflowID("hv01", ids["web01"]), contract.VMWorkflowID("hv01", ids["db01"])
	if !strings.Contains(list, web) || strings.Contains(list, db) {
		t.Errorf("the list for ReplicatorVM = 'web01' does not show %s alone", web)
	}
	page := dumpDOM(t, chromium, "http://"+ui+"/namespaces/default/workflows/"+url.PathEscape(web))
	if !strings.Contains(page, "web01") {
		t.Errorf("the page of %s does not name its VM", web)
	}
	// Its fixed summary (the UI shows it where its version does).
	d, err := h.c.DescribeWorkflowExecution(context.Background(), web, "")
	if err != nil {
		t.Fatal(err)
	}
	var summary string
	if p := d.GetExecutionConfig().GetUserMetadata().GetSummary(); p != nil {
		_ = converter.GetDefaultDataConverter().FromPayload(p, &summary)
	}
	if !strings.HasPrefix(summary, "web01 · job demo") {
		t.Errorf("the summary of %s is %q", web, summary)
	}
	list = list + page
	if t.Failed() {
		os.WriteFile("/tmp/webui-list.html", []byte(list), 0o644)
		os.WriteFile("/tmp/webui-run.html", []byte(run), 0o644)
	}
}
