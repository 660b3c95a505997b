# The lab's test guest (lab/guest/README.md): a freestanding x86-64 PVH kernel.
#
#   make guest        build build/guest/guest.elf (the lab builds its own copy)
#   make guest-test   build it and run tests/guest: boots it under plain QEMU TCG
#                     (no Xen), about 10 s; part of `make test`

APT_PACKAGES += gcc binutils make python3 qemu-system-x86

TEST_PARTS += guest-test
GUEST_PY = $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: guest guest-test
guest:
	$(MAKE) -C lab/guest O=$(abspath build/guest)

guest-test:
	$(GUEST_PY) -m pytest -q -p no:cacheprovider -m "guest or not guest" tests/guest
