# cairn: the targets a newcomer needs. `make run` starts a 3-node dev cluster; `make test` runs the
# whole suite (race detector on) within 15 minutes on 2 cores.
GO        ?= go
BIN       ?= bin/cairn
PKGS      ?= ./...
STATICCHECK_VERSION ?= v0.8.2
CHAOS_DURATION ?= 2m
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null)

.PHONY: build run test test-short lint bench chaos e2e fuzz clean pressure

build:
	$(GO) build -ldflags "-X main.version=$(VERSION) -X main.revision=$(REVISION)" -o $(BIN) ./cmd/cairn

run: build
	./$(BIN) dev

# -race everywhere: every package here is concurrent. The timeout is a backstop for hangs.
test:
	$(GO) vet $(PKGS)
	@# core holds the product rules and must not depend on cluster or raft (core/DESIGN.md): it
	@# sees cluster's errors and the wait budget through the raft-free cluster/clusterapi, and the
	@# fsm through its raft-free API (cluster.RaftFSM adapts it for raft).
	@if $(GO) list -deps ./core | grep -x -e 'github.com/cairn-dev/cairn/cluster' -e 'github.com/hashicorp/raft'; then echo "core must not depend on the package above"; exit 1; fi
	$(GO) test -race -count=1 -timeout 14m $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

# cairn bench: the four data-plane workloads of issue 9 against a 3-node cluster on this disk, with
# the machine's ceilings in the same run (BENCH_DURATION per workload after a 1 s warm-up, about
# 1 minute in all), then the Go micro-benchmarks with allocation counts.
BENCH_DURATION ?= 5s
bench: build
	./$(BIN) bench --duration $(BENCH_DURATION) --warmup 1s
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 20m ./erasure/ ./fsm/ ./httpapi/

clean:
	rm -rf bin

# The official JavaScript SDKs (Extra Horizon files, enmeshed Connector 6.x) run their file and token
# flows against a fresh `cairn dev` cluster. Needs node, npm and the npm registry; `make test` skips it.
.PHONY: sdk-test
sdk-test:
	CAIRN_SDK_TEST=1 $(GO) test -count=1 -v -timeout 10m ./e2e/

# The fault-injection suite (testcluster/chaos_test.go): random kills, graceful restarts and
# partitions of a 5-node 3+2 cluster under concurrent clients for CHAOS_DURATION, then a porcupine
# check of the recorded history and a byte-exact read of every acknowledged upload through every node.
# CHAOS_SEED=0 takes a seed from the clock; the test always logs it, and on failure prints how to rerun
# it and where the HTML report went (CHAOS_REPORT_DIR, default the system temp dir).
# The timeout is CHAOS_DURATION plus 10m: Go durations may repeat a unit, so "2m10m" is 12m.
CHAOS_SEED ?= 0
chaos:
	$(GO) test -race -count=1 -v -run '^TestChaos$$' -timeout $(CHAOS_DURATION)10m ./testcluster/ \
		-args -chaos.duration=$(CHAOS_DURATION) -chaos.seed=$(CHAOS_SEED)

# A 3-node cluster (production timings, real Raft and memberlist) next to a child process that keeps
# every core busy for PRESSURE_DURATION, under a light upload/download load: any leader election
# fails it (testcluster/pressure_test.go). No -race: it measures the build that runs in production.
# PRESSURE_MULTIPLIER=0 takes the default --raft-multiplier.
PRESSURE_DURATION ?= 2m
PRESSURE_MULTIPLIER ?= 0
pressure:
	$(GO) test -count=1 -v -run '^TestLeaderStaysPutUnderCPUPressure$$' -timeout $(PRESSURE_DURATION)5m ./testcluster/ \
		-args -pressure.duration=$(PRESSURE_DURATION) -pressure.multiplier=$(PRESSURE_MULTIPLIER)

# Real-process tests only: the cairn binary as separate processes (also part of `make test`).
e2e:
	$(GO) test -race -count=1 -v -run 'E2E' ./cmd/cairn/

# Every fuzz target for FUZZTIME each (go test runs one fuzz target per invocation).
# FUZZTIME is an exec count, not a duration: with a duration, Go 1.26's fuzz coordinator can fail
# a target that found nothing with a bare "context deadline exceeded" when the time runs out
# (golang/go#75804, fixed in Go 1.27); a count sets no deadline. FUZZMINIMIZETIME bounds the
# minimisation of each new interesting input, whose runs the progress line does not count: it
# shows "0/sec" meanwhile (golang/go#51484), which is not a hang.
FUZZTIME ?= 20000x
FUZZMINIMIZETIME ?= 5s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg; \
	  done; \
	done
