"""The guest ELF as Xen's libelf and QEMU's PVH loader see it (no QEMU
needed): a PVH entry note, physical load addresses, the entry inside the
loaded range, the fixed addresses where the linker script puts them."""

from __future__ import annotations

import struct
from pathlib import Path

import guestinfo

XEN_ELFNOTE_PHYS32_ENTRY = 18
PT_LOAD, PT_NOTE = 1, 4


def phdrs(elf: bytes) -> list[tuple[int, int, int, int, int, int, int]]:
    """(type, flags, offset, vaddr, paddr, filesz, memsz) of each program header."""
    assert elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[5] == 1, "ELF64 little-endian"
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    out = []
    for i in range(phnum):
        t, fl, off, va, pa, fsz, msz, _align = struct.unpack_from("<IIQQQQQQ", elf,
                                                                 phoff + i * phentsize)
        out.append((t, fl, off, va, pa, fsz, msz))
    return out


def notes(elf: bytes, off: int, size: int) -> list[tuple[bytes, int, bytes]]:
    out = []
    end = off + size
    while off + 12 <= end:
        namesz, descsz, typ = struct.unpack_from("<III", elf, off)
        off += 12
        name = elf[off:off + namesz].rstrip(b"\0")
        off += (namesz + 3) & ~3
        desc = elf[off:off + descsz]
        off += (descsz + 3) & ~3
        out.append((name, typ, desc))
    return out


def test_pvh_entry_note_and_load_addresses(guest_elf: Path) -> None:
    elf = guest_elf.read_bytes()
    e_machine, = struct.unpack_from("<H", elf, 0x12)
    e_entry, = struct.unpack_from("<Q", elf, 0x18)
    assert e_machine == 62                                   # EM_X86_64
    ph = phdrs(elf)
    loads = [p for p in ph if p[0] == PT_LOAD]
    assert len(loads) == 1
    _, _, _, vaddr, paddr, _filesz, memsz = loads[0]
    assert paddr == 0x100000 and vaddr == guestinfo.KBASE + paddr
    end = paddr + memsz
    assert end <= guestinfo.INFO_GPA, "the image must not reach the info page"
    assert end >= guestinfo.ROOTS_GPA + 0x2000 * guestinfo.NPROC_MAX
    # Xen's libelf wants e_entry inside the loaded physical range.
    assert paddr <= e_entry < end

    entries = [
        int.from_bytes(desc, "little")
        for p in ph if p[0] == PT_NOTE
        for name, typ, desc in notes(elf, p[2], p[5])
        if name == b"Xen" and typ == XEN_ELFNOTE_PHYS32_ENTRY
    ]
    assert entries == [e_entry], "one PHYS32_ENTRY note, equal to the physical entry"


def test_fixed_code_addresses(guest_elf: Path) -> None:
    """The first bytes of each function at its documented guest-physical
    address are its documented first instruction."""
    elf = guest_elf.read_bytes()
    _, _, off, _, paddr, filesz, _ = next(p for p in phdrs(elf) if p[0] == PT_LOAD)

    def at(gpa: int, n: int) -> bytes:
        assert paddr <= gpa and gpa + n <= paddr + filesz
        return elf[off + gpa - paddr:off + gpa - paddr + n]

    assert at(guestinfo.KFUNC_GPA, 8) == guestinfo.KFUNC_INSN
    assert at(guestinfo.KFUNC2_GPA, 7) == guestinfo.KFUNC2_INSN
    assert at(guestinfo.UFUNC_GPA, 7) == guestinfo.UFUNC_INSN
    # kfunc2's displacement reaches its constant at page offset 0xf00
    assert guestinfo.KFUNC2_GPA + 7 + 0x6F9 == guestinfo.KFUNC_GPA + 0xF00
    assert at(guestinfo.KFUNC_GPA + 0xF00, 8) == (0x9E3779B97F4A7C15).to_bytes(8, "little")
    assert at(guestinfo.DBG_GPA, 1) == b"\x9c"                 # pushfq
