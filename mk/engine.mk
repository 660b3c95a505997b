# The rule engine: ABI header check, evaluator unit tests under the
# sanitizers, the libFuzzer target and the cost benchmark
# (xen/tests/hvfilter).

APT_PACKAGES += gcc g++ clang libclang-rt-14-dev libxen-dev

ENGINE_DIR := xen/tests/hvfilter
FUZZ_SECONDS ?= 60

TEST_PARTS += engine-test
BENCH_PARTS += bench-engine

.PHONY: engine-test fuzz bench-engine
engine-test:
	$(MAKE) -C $(ENGINE_DIR) test

fuzz:
	$(MAKE) -C $(ENGINE_DIR) fuzz FUZZ_SECONDS=$(FUZZ_SECONDS)

bench-engine:
	$(MAKE) -C $(ENGINE_DIR) bench
