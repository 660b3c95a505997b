# The lab benchmark: process-bound monitoring, stock VMI against hvfilter,
# on patched Xen under QEMU (bench/lab_bench.py, docs/benchmarks.md).
#
#   make bench-lab   engine and Python benchmarks first (their JSON goes into
#                    the same report), then one lab boot running the three
#                    shares; writes bench/results/lab.json, docs/benchmarks.md
#                    and docs/benchmarks-lab.png.  The lab part took 8 min here.

BENCH_PARTS += bench-lab
# bench-lab reports on these, so they run first (make runs each once).
BENCH_LAB_DEPS := bench-engine bench-python

.PHONY: bench-lab
bench-lab: $(BENCH_LAB_DEPS)
	$(MAKE) lab XEN_VARIANT=patched
	@$(LAB_PY) -c 'import matplotlib' 2>/dev/null || $(LAB_PY) -m pip install -q matplotlib
	$(LAB_PY) bench/lab_bench.py
