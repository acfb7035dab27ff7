package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/replicator/replicator/config"
	"github.com/replicator/replicator/internal/contract"
	"github.com/replicator/replicator/internal/temporalclient"
)

// TestPayloadsEncryptedInTheCluster runs the demo job with the payload codec
// on: no history event of the run or of its VM runs holds a VM name or a
// setting in plain text, a client without the key cannot read the result,
// and the codec server (the Web UI's way in) decodes it with the key.
func TestPayloadsEncryptedInTheCluster(t *testing.T) {
	clearReplicatorEnv(t)
	keyFile := filepath.Join(t.TempDir(), "codec.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, roleSet{jobs: true, proxy: true, target: true}, false, func(c *config.Config) {
		c.Temporal.CodecKeyFile = keyFile
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	id := fmt.Sprintf("encrypted-%d", time.Now().UnixNano())
	run, err := h.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: h.cfg.Temporal.TaskQueue},
		contract.ReplicationWorkflow, contract.ReplicationInput{Job: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	var res contract.ReplicationResult
	if err := run.Get(ctx, &res); err != nil || res.Status != contract.StatusSuccess {
		t.Fatalf("run: %v %+v", err, res)
	}
	// The VM runs are children with the fixed id vm/<host>/<vm-id>, which
	// every run of that VM shares: the parent's history names the run ids of
	// the children this run started, and those are the histories to read.
	type execution struct{ id, runID string }
	execs := []execution{{id, run.GetRunID()}}
	children := map[string]bool{}
	var resultPayloads [][]byte
	for i := 0; i < len(execs); i++ {
		e := execs[i]
		it := h.c.GetWorkflowHistory(ctx, e.id, e.runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		events := 0
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				t.Fatalf("history of %s (run %s): %v", e.id, e.runID, err)
			}
			events++
			b, err := proto.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			for _, plain := range []string{"web01", "db01", "targetAddress", "blockSize", "bytesWritten"} {
				if bytes.Contains(b, []byte(plain)) {
					t.Errorf("event %d (%s) of %s holds %q in plain text", ev.EventId, ev.EventType, e.id, plain)
				}
			}
			if i == 0 {
				if a := ev.GetChildWorkflowExecutionStartedEventAttributes(); a != nil {
					we := a.GetWorkflowExecution()
					execs = append(execs, execution{we.GetWorkflowId(), we.GetRunId()})
					children[we.GetWorkflowId()] = true
				}
				if a := ev.GetWorkflowExecutionCompletedEventAttributes(); a != nil {
					for _, p := range a.GetResult().GetPayloads() {
						b, _ := proto.Marshal(p)
						resultPayloads = append(resultPayloads, b)
					}
				}
			}
		}
		if events == 0 {
			t.Fatalf("no history for %s (run %s)", e.id, e.runID)
		}
	}
	for _, vm := range res.VMs {
		if wid := contract.VMWorkflowID(h.cfg.Hosts[0].Name, vm.ID); !children[wid] {
			t.Errorf("the run started no VM run %s for %s (children: %v)", wid, vm.Name, children)
		}
	}
	if len(resultPayloads) != 1 {
		t.Fatalf("%d result payloads", len(resultPayloads))
	}
	// Without the key: the result does not decode.
	plainOpts := client.Options{HostPort: h.cfg.Temporal.Address, Namespace: h.cfg.Temporal.Namespace}
	plainClient, err := client.Dial(plainOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer plainClient.Close()
	var stolen contract.ReplicationResult
	if err := plainClient.GetWorkflow(ctx, id, "").Get(ctx, &stolen); err == nil {
		t.Fatalf("a client without the key read the result: %+v", stolen)
	}
	// Through the codec server, with the key, the operator sees it.
	codec, err := temporalclient.LoadCodec(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(codec.Handler("http://127.0.0.1:8233", ""))
	defer srv.Close()
	decoded := decodeThroughCodecServer(t, srv.URL, resultPayloads[0])
	if !strings.Contains(decoded, "web01") {
		t.Fatalf("the codec server's answer does not show the VM: %s", decoded)
	}
}

// decodeThroughCodecServer posts one payload (proto bytes) to the codec
// server's /decode as the Web UI does and returns the decoded JSON data.
func decodeThroughCodecServer(t *testing.T, url string, payload []byte) string {
	t.Helper()
	var p commonpb.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		t.Fatal(err)
	}
	body, err := protojson.Marshal(&commonpb.Payloads{Payloads: []*commonpb.Payload{&p}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, url+"/decode", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "http://127.0.0.1:8233")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out commonpb.Payloads
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if err := protojson.Unmarshal(buf.Bytes(), &out); err != nil || len(out.Payloads) != 1 {
		t.Fatalf("codec server answered %d %s (%v)", resp.StatusCode, buf.String(), err)
	}
	return string(out.Payloads[0].Data)
}
