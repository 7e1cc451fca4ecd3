# The front door: `make test` and `make demo` work on a fresh Debian 12 machine.
PREFIX ?= /usr/local
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build test install bench demo fuzz sanitize clean

all: build

deps:
	@scripts/install-deps

# Makefile, not CMakeCache.txt: a configure that failed leaves the cache behind but no Makefile.
$(BUILD)/Makefile: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS)

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# The main job on the embedded model, each step printed (scripts/demo).
demo: build
	@scripts/demo $(BUILD)

bench: build
	scripts/bench tokenize
	scripts/bench decode
	scripts/bench llamacpp
	scripts/bench

# Each libFuzzer target runs FUZZ_SECONDS; new inputs go to build-fuzz/corpus,
# crashes to build-fuzz/crashes (copy those worth keeping to tests/fuzz/<target>/).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = safetensors ids kv heads config weight_index kv_policy options model_spec logprob_base weight_cache
fuzz:
	@scripts/install-deps --with-fuzz
	cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEADS_FUZZ=ON $(CMAKE_FLAGS)
	cmake --build build-fuzz -j $(JOBS) --target $(FUZZ_TARGETS:%=%_fuzz)
	mkdir -p build-fuzz/crashes
	for target in $(FUZZ_TARGETS); do \
	    mkdir -p build-fuzz/corpus/$$target && \
	    build-fuzz/fuzz/$${target}_fuzz -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 \
	        -artifact_prefix=build-fuzz/crashes/$$target- build-fuzz/corpus/$$target tests/fuzz/$$target || exit 1; \
	done

# The whole test suite under AddressSanitizer and UndefinedBehaviorSanitizer.
sanitize: deps
	cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEADS_SANITIZE=ON $(CMAKE_FLAGS)
	cmake --build build-sanitize -j $(JOBS)
	cd build-sanitize && ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD) build-sanitize build-fuzz
