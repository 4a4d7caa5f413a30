# cairn: `make test` on a fresh Debian machine installs what the tests need
# and runs every test with the race detector.

GO       ?= go
FUZZTIME ?= 30s
# System packages the tests and benchmarks call: the real Nix client, FUSE,
# the compressors Nix caches use, and the C compiler that -race and the
# libzstd recompressor need.
# Each entry is package:what-shows-it-is-there, a command or an absolute path
# (gcc only recommends the C library headers, and apt here installs no
# recommends).
APT_PKGS := nix-bin:nix-store fuse3:fusermount3 xz-utils:xz bzip2:bzip2 zstd:zstd gcc:gcc libc6-dev:/usr/include/stdio.h

.PHONY: all deps bench-deps test vet cross bench fuzz

all: test

deps:
	@missing=""; \
	for p in $(APT_PKGS); do \
	  have="$${p#*:}"; \
	  case "$$have" in \
	    /*) test -e "$$have" ;; \
	    *) command -v "$$have" >/dev/null 2>&1 ;; \
	  esac || missing="$$missing $${p%%:*}"; \
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

# cairn serves from Linux, but it also builds for macOS (no splice, no
# syncfs, no read-ahead knob there): this keeps Linux-only calls behind
# build tags.
cross:
	GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./cmd/cairn

# The race run builds with cgo, so frames come from libzstd; the second run
# checks the klauspost frames of a build without cgo.
test: deps vet cross
	$(GO) test -race -timeout 25m ./...
	CGO_ENABLED=0 $(GO) test ./cdc

# Benchmarks print one table each, every figure next to a baseline measured
# in the same run. The first run builds Go toolchain fixtures (a few minutes).
# -p 1: one package at a time, so that no benchmark loads the CPU of another.
bench: deps bench-deps
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 60m ./appliance ./appliance/seed ./cmd/cairn ./fusefs

# What only the benchmarks call: nginx serves the baseline caches, wrk and
# curl load both servers. nginx lives in /usr/sbin, which a user's PATH may lack.
BENCH_PKGS := nginx-light:nginx wrk:wrk curl:curl

bench-deps:
	@PATH="$$PATH:/usr/sbin" $(MAKE) --no-print-directory deps APT_PKGS="$(BENCH_PKGS)"

fuzz:
	$(GO) test ./cdc -run '^$$' -fuzz '^FuzzListingParser$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cdc -run '^$$' -fuzz '^FuzzParseListingJSON$$' -fuzztime $(FUZZTIME)
	$(GO) test ./appliance/narinfo -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./appliance -run '^$$' -fuzz '^FuzzPutNarInfo$$' -fuzztime $(FUZZTIME)
	$(GO) test ./appliance -run '^$$' -fuzz '^FuzzXZLib$$' -fuzztime $(FUZZTIME)
	$(GO) test ./httpd -run '^$$' -fuzz '^FuzzRoute$$' -fuzztime $(FUZZTIME)
