# hvfilter top-level Makefile.
#
# Each part of the project keeps its own rules in mk/<part>.mk; this file only
# ties them together.  A part adds the name of its fast, Xen-free test target
# to TEST_PARTS so that `make test` runs it.
#
#   make test        fast tests, no Xen needed (C harness under sanitizers, pytest)
#   make fuzz        bounded libFuzzer run of the rule evaluator
#   make xen         patched Xen hypervisor from Debian's source package
#   make lab         build everything the QEMU lab needs (cached in build/)
#   make lab-test    end-to-end scenarios on Xen under QEMU
#   make bench       benchmarks (print tables, write bench/results/*.json)

.DEFAULT_GOAL := help
TEST_PARTS :=
BENCH_PARTS :=

include $(sort $(wildcard mk/*.mk))

.PHONY: help test bench
help:
	@sed -n '3,13p' Makefile

test: $(TEST_PARTS)

bench: $(BENCH_PARTS)
