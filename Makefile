# cairn: `make test` on a fresh Debian machine installs what the tests need
# and runs every test with the race detector.

GO       ?= go
FUZZTIME ?= 30s
# System packages the tests and benchmarks call: the real Nix client, FUSE,
# and the compressors Nix caches use.
APT_PKGS := nix-bin:nix-store fuse3:fusermount3 xz-utils:xz bzip2:bzip2 zstd:zstd

.PHONY: all deps test vet bench fuzz

all: test

deps:
	@missing=""; \
	for p in $(APT_PKGS); do \
	  command -v "$${p#*:}" >/dev/null 2>&1 || missing="$$missing $${p%%:*}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

test: deps vet
	$(GO) test -race -timeout 25m ./...

# Benchmarks print one table each, every figure next to a baseline measured
# in the same run. The first run builds Go toolchain fixtures (a few minutes).
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./appliance

fuzz:
	$(GO) test ./cdc -run '^$$' -fuzz '^FuzzListingParser$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cdc -run '^$$' -fuzz '^FuzzParseListingJSON$$' -fuzztime $(FUZZTIME)
