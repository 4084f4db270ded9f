# The two commands a fresh machine needs:
#   make run    serve the example cluster (Corefile.example) on 127.0.0.1:1053
#   make test   install what the tests need, build the peers, run every test
#               (as root: this is what CI runs)
# and, for a contributor without root on a machine with nothing installed:
#   make unit   every test that needs no root, network namespace, VM, API
#               server or external tool (go test -short), in a few minutes
# `make bench` and `make bench-peers` measure; they are not part of make test,
# but the peer harness's smoke run (e2e/bench, small N) is, so it cannot rot.
# `make fuzz FUZZTIME=1h` runs every fuzz target for that long in turn; make
# test runs their seed corpora (testdata/fuzz) and 20 seconds of each.

GO ?= go

.PHONY: run test unit deps vet bench bench-peers fuzz fuzz-ci

# The fuzz targets, as package:name. FUZZFLAGS passes more flags to each
# run, e.g. FUZZFLAGS=-parallel=1 on a shared machine.
FUZZ_TARGETS = ./server:FuzzAnswer ./server:FuzzFastPath ./server:FuzzFastPathCacheHit ./server:FuzzTCPStream ./server:FuzzParseTCPQuery ./server:FuzzParseConfig \
	./resolver:FuzzRoundTrip \
	./zone:FuzzManifests ./zone:FuzzDeriveSlices ./proxy/iptables:FuzzRestoreInput ./proxy/nftables:FuzzScript
FUZZTIME ?= 1m
FUZZFLAGS ?=

run:
	$(GO) run ./cmd/clusterdns serve --conf Corefile.example

deps:
	./e2e/install-deps.sh
	./e2e/bench/install-deps.sh
	./e2e/tools/build.sh >/dev/null
	./e2e/vm/build.sh >/dev/null

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	cd e2e/bench && $(GO) vet ./...

# Without -short a test that lacks what it needs fails (internal/testenv).
test: deps vet
	$(GO) test -count=1 -timeout 60m ./...
	cd e2e/bench && CLUSTERDNS_VM_REQUIRED=1 $(GO) test -count=1 -timeout 20m ./...
	$(MAKE) fuzz-ci

# Each fuzz target for FUZZTIME, one after the other (Go fuzzes one target
# of one package per run). A failing input is saved under the package's
# testdata/fuzz/NAME/ and becomes part of its seed corpus.
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz: $${t#*:} ($${t%%:*}) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) $(FUZZFLAGS) "$${t%%:*}"; \
	done

# The short pass make test runs: three minutes of fuzzing plus the
# instrumented builds.
fuzz-ci:
	$(MAKE) fuzz FUZZTIME=20s

# -short leaves out, through internal/testenv, every test that needs more
# than Go and loopback sockets. -count=1: the e2e tests build the binary
# themselves, which the test cache cannot see. CGO_ENABLED=0 as that build
# has it, so the dependencies compile once (and gcc is not needed). e2e/bench
# is left out: it pins other versions of x/sys and x/net, and so compiles
# every dependency again (minutes on a fresh machine) for a second's tests.
unit:
	CGO_ENABLED=0 $(GO) test -short -count=1 ./...

# Micro-benchmarks of the answer path, the index and the rule renderers.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./zone/... ./resolver/... ./server/... ./proxy/...

# clusterdns against CoreDNS and kube-proxy at 10,000 Services (root, 2
# cores): DNS and iptables rules (about 25 minutes), iptables-nft rules at
# the sizes it manages (5 minutes), nftables mode (about 15 minutes), IPVS
# rules in the e2e VM under emulation (about an hour); writes
# e2e/bench/results/.
bench-peers: deps
	$(GO) test -C e2e/bench -run TestPeers -timeout 90m -v . -args -full
	$(GO) test -C e2e/bench -run TestPeers -timeout 30m -v . -args -parts rules -iptables nft -rule-sizes 1000,2000 -out results/iptables-nft
	$(GO) test -C e2e/bench -run TestPeers -timeout 90m -v . -args -full -parts rules -rules-mode nftables -out results/nftables
	$(GO) test -C e2e/bench -run TestPeers -timeout 150m -v . -args -full -parts ipvs -rounds 2 -out results/ipvs
