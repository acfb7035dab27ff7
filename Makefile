# The test command of README.md and CI is `go test ./...`; these targets add
# the checks CI runs and the longer suites.
GO ?= go

.PHONY: test check bench fuzz load load-large rpo reliability

test:
	$(GO) test ./...

check:
	test -z "$$(gofmt -l .)"
	$(GO) vet ./...
	GOOS=windows $(GO) build ./...
	GOOS=windows $(GO) vet ./internal/provider/hyperv/... ./internal/guest/... ./activities/...
	workflowcheck ./workflows/...
	staticcheck ./...

# Longer fuzzing of the parsers that read untrusted bytes.
fuzz:
	$(GO) test ./internal/vhdx -run '^$$' -fuzz FuzzOpen -fuzztime 2m
	$(GO) test ./internal/exclude -run '^$$' -fuzz FuzzAnalyze -fuzztime 2m
	$(GO) test ./config -run '^$$' -fuzz FuzzDecode -fuzztime 1m

# The data path side by side with rsync -z (over rsync's protocol through a
# pipe), rsync and zstd on 2 GiB disks of mixed, random and text-heavy content
# (the generated part of BENCHMARKS.md; about 15 minutes on 2 cores); full runs through Temporal against
# rsync -z; then what orchestration costs per VM, then the 20-VM job on the
# production topology (PostgreSQL, separate processes; the tools .ci/run
# installs) beside the embedded stack.
# BENCH_FLAGS: e.g. -size 2GiB, -runs 5, -contents random, -sections full,
# -level-runs 0, -dir /tmp. FULLCOPY_MIB: disk size of the runs through Temporal.
BENCH_FLAGS ?=
FULLCOPY_MIB ?= 2048

bench:
	$(GO) test ./internal/codec ./internal/vhdx ./internal/transfer -run '^$$' -bench . -benchmem
	$(GO) run ./bench -size 2GiB -out BENCHMARKS.md $(BENCH_FLAGS)
	REPLICATOR_FULLCOPY_MIB=$(FULLCOPY_MIB) REPLICATOR_FULLCOPY_RUNS=6 $(GO) test ./workers -run '^TestFullCopyAgainstRsync$$' -count=1 -v -timeout 60m
	REPLICATOR_ORCHESTRATION_VMS=50 $(GO) test ./workers -run '^TestOrchestrationOverhead$$' -count=1 -v
	$(GO) test -tags bench ./deploy/topology -run '^TestTopologyBenchmark$$' -count=1 -v

# One job of 200 lab VMs (2 disks each) at parallelism 8 on the in-process
# stack: all must succeed, no workflow history may pass 2,000 events; logs
# wall time, CPU time, peak RSS and the largest history.
load:
	REPLICATOR_LOAD_VMS=200 $(GO) test ./workers -run '^TestLoadManyVMs$$' -count=1 -v -timeout 60m

# A job of thousands of lab VMs (one 1 MiB disk each): the same checks, and
# no Temporal payload size warning (TMPRL1103) in the worker's log.
LOAD_VMS ?= 5000
load-large:
	REPLICATOR_LOAD_VMS=$(LOAD_VMS) $(GO) test ./workers -run '^TestLoadManyVMs$$' -count=1 -v -timeout 180m

# The rpo held under load: 20 lab VMs writing 1 MiB/s each, rpo 30s then 5m,
# 10 minutes each (BENCHMARKS.md, "RPO under sustained writes").
rpo:
	REPLICATOR_RPO=30s REPLICATOR_RPO_MINUTES=10 REPLICATOR_RPO_VMS=20 $(GO) test -tags bench ./workers -run '^TestRPOSustained$$' -count=1 -v -timeout 60m
	REPLICATOR_RPO=5m REPLICATOR_RPO_MINUTES=10 REPLICATOR_RPO_VMS=20 $(GO) test -tags bench ./workers -run '^TestRPOSustained$$' -count=1 -v -timeout 60m

# The fault scenarios and bad inputs, repeated (`go test ./...`, and so CI,
# runs each once): connections cut at random points, half-open and stalled
# connections, latency and bandwidth limits, the worker (jobs + proxy)
# killed with SIGKILL 5 times during transfers, the agent killed 3 times
# during writes and commits, replica writers killed 50 times per run, the
# Temporal server killed and restarted mid-run, backup windows closing run
# after run, the source written during every run, and 60+ hostile inputs
# (VHDX files, replica metadata, frames, certificates, names, configurations,
# workflow inputs).
reliability:
	$(GO) test -count=3 -run 'ResumeAcrossCuts|ReceiverKilled|CorruptFrames|UnknownClients|NamesRejected|DigestModeResumesAcrossCuts|HalfOpen|Stalled|ChangedParts|ReplicaDiffers|EndTransfers' ./internal/transfer
	$(GO) test -count=2 -run 'Crash' ./internal/replica
	$(GO) test -count=3 -run 'TestEndToEnd(Window|Proxy|TemporalServer|ConnectionCut)|TestReliability|TestBadInput' -timeout 60m ./workers
