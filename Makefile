# The two commands a fresh machine needs:
#   make run    serve the example cluster (Corefile.example) on 127.0.0.1:1053
#   make test   install what the tests need, build the peers, run every test
# `make bench` runs the benchmarks; it is not part of the test command.

GO ?= go

.PHONY: run test deps vet bench

run:
	$(GO) run ./cmd/clusterdns serve --conf Corefile.example

deps:
	./e2e/install-deps.sh
	./e2e/tools/build.sh >/dev/null
	./e2e/vm/build.sh >/dev/null

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

test: deps vet
	CLUSTERDNS_VM_REQUIRED=1 $(GO) test -count=1 -timeout 60m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./zone/... ./resolver/... ./server/... ./proxy/...
