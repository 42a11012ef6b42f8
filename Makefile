# berth: one static binary. `make run` builds and starts registryd on the built-in
# default config; `make test` builds the static binary and runs every test against it.

CARGO   ?= cargo
TARGET  := x86_64-unknown-linux-musl
RELEASE := target/$(TARGET)/release/berth
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR   = $(DESTDIR)$(PREFIX)/bin

.PHONY: all static run test test-deps install bench bench-init bench-mkimage bench-engine bench-logcollect dist fmt clean

all: static

static:
	@scripts/need.sh build
	$(CARGO) build --release --locked --target $(TARGET) --bin berth
	@mkdir -p dist
	cp $(RELEASE) dist/berth.new && mv -f dist/berth.new dist/berth

run: static
	dist/berth registryd config/registry.yml

test-deps:
	@scripts/need.sh test

# The integration tests run the very binary `make static` ships (BERTH_BIN).
test: static test-deps
	BERTH_BIN=$(CURDIR)/dist/berth $(CARGO) test --release --locked --target $(TARGET)

install: static
	install -D -m 0755 dist/berth $(BINDIR)/berth
	$(BINDIR)/berth --install $(BINDIR)

bench: static
	@scripts/need.sh bench
	bench/registry.sh

# berth init vs dumb-init and tini: start-to-exit time and idle RSS.
bench-init: static
	@scripts/need.sh bench
	bench/init.sh

# mkimage's packing vs GNU tar -czf on the same 1 GiB tree (as root).
bench-mkimage: static
	@scripts/need.sh bench
	bench/mkimage.sh

# engined vs Debian's dockerd 20.10 (started by the script on its own socket).
bench-engine: static
	@scripts/need.sh bench
	bench/engine.sh

# logcollect vs rsyslog's imfile: one million lines to rsyslog over TCP.
bench-logcollect: static
	@scripts/need.sh bench
	bench/logcollect.sh

# Smallest binary for shipping (slow to build: fat LTO, one codegen unit).
dist:
	@scripts/need.sh build
	$(CARGO) build --profile dist --locked --target $(TARGET) --bin berth
	@mkdir -p dist
	cp target/$(TARGET)/dist/berth dist/berth.new && mv -f dist/berth.new dist/berth

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
	rm -rf dist var
