# berth: one static binary. `make run` builds and starts registryd on the built-in
# default config; `make test` builds the static binary and runs every test against it.

CARGO   ?= cargo
TARGET  := x86_64-unknown-linux-musl
RELEASE := target/$(TARGET)/release/berth
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR   = $(DESTDIR)$(PREFIX)/bin

.PHONY: all static run test test-deps install bench bench-init bench-mkimage bench-engine bench-logcollect fuzz dist fmt clean

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

# Coverage-guided fuzzing of every parser of outside input (cargo-fuzz,
# libFuzzer; RUSTC_BOOTSTRAP for its sanitizer flags on the stable toolchain).
# Each target runs FUZZ_SECONDS; what it finds new goes to fuzz/corpus/,
# which `make test` replays. A crash stops here with its input in fuzz/artifacts/.
FUZZ_SECONDS ?= 60
# The archive targets unpack every input: on tmpfs that costs no journal.
FUZZ_TMPDIR ?= $(shell test -d /dev/shm && echo /dev/shm || echo /tmp)
FUZZ_TARGETS = reference digest manifest image_config htpasswd config_yml http_front range json_log challenge tar_extract tar_overlay content_range docker_archive mkimage_recipe signature signature_policy
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build -O
	@mkdir -p fuzz/logs
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t for $(FUZZ_SECONDS) s"; \
		TMPDIR=$(FUZZ_TMPDIR) RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 \
			>fuzz/logs/$$t.log 2>&1 || { tail -40 fuzz/logs/$$t.log; exit 1; }; \
		grep -E "^stat::(number_of_executed_units|new_units_added)" fuzz/logs/$$t.log; \
	done

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
