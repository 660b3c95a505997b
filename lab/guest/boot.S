/* SPDX-License-Identifier: MIT */
/*
 * hvfilter test guest: PVH entry, switch to long mode, exception stubs and
 * the kernel function.
 *
 * The image is linked at HVFG_KBASE + physical address (like Linux's
 * __START_KERNEL_map) and loaded at its physical address; PA(x) is the
 * physical address of a symbol, used while paging is still off.
 */
#include "info.h"

#define PA(x) ((x) - HVFG_KBASE)

#define SEL_CODE64 0x08
#define SEL_DATA   0x10
#define SEL_CODE32 0x18
#define SEL_UDATA  0x33     /* GDT slot 6, RPL 3 */
#define SEL_UCODE  0x3b     /* GDT slot 7, RPL 3 */

/* ------------------------------------------------------------------------
 * ELF note read by Xen's libelf and by QEMU: the 32-bit PVH entry point.
 * XEN_ELFNOTE_PHYS32_ENTRY = 18; name "Xen"; 4-byte aligned (QEMU pads the
 * name by the PT_NOTE alignment, so the segment must be 4-aligned).
 */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz */
    .long 8                 /* descsz */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad PA(pvh_start)
    .balign 4

/* ------------------------------------------------------------------------
 * 32-bit entry: protected mode, paging off, %ebx = hvm_start_info (phys).
 * GDTR and segment registers other than CS/DS/ES/SS are unspecified.
 */
    .section .text.boot, "ax"
    .code32
    .globl pvh_start
pvh_start:
    cli
    cld
    mov     %ebx, %ebp                  /* start info, kept for kmain */

    lgdt    PA(gdt_desc32)
    mov     $SEL_DATA, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    mov     %eax, %fs
    mov     %eax, %gs
    ljmp    $SEL_CODE32, $PA(1f)
1:
    /* Boot page tables: PML4[0] identity maps 0..1 GiB, PML4[511] maps the
     * same 1 GiB at HVFG_KBASE (PDPT slot 510); one shared PD, 2 MiB pages. */
    mov     $PA(boot_pml4), %edi
    xor     %eax, %eax
    mov     $(4 * 4096 / 4), %ecx
    rep stosl

    mov     $PA(boot_pd), %edi
    mov     $0x83, %eax                 /* present, writable, 2 MiB */
    mov     $512, %ecx
2:  mov     %eax, (%edi)
    movl    $0, 4(%edi)
    add     $0x200000, %eax
    add     $8, %edi
    loop    2b

    mov     $(PA(boot_pd) + 3), %eax
    mov     %eax, PA(boot_pdpt_lo)
    mov     %eax, PA(boot_pdpt_hi) + 510 * 8
    mov     $(PA(boot_pdpt_lo) + 3), %eax
    mov     %eax, PA(boot_pml4)
    mov     $(PA(boot_pdpt_hi) + 3), %eax
    mov     %eax, PA(boot_pml4) + 511 * 8

    mov     %cr4, %eax
    or      $0x20, %eax                 /* PAE */
    mov     %eax, %cr4

    mov     $PA(boot_pml4), %eax
    mov     %eax, %cr3                  /* the first CR3 write: counted here */
    incl    PA(boot_cr3_writes)

    mov     $0xc0000080, %ecx           /* EFER */
    rdmsr
    or      $0x100, %eax                /* LME */
    wrmsr

    mov     %cr0, %eax
    or      $0x80000001, %eax           /* PG | PE */
    mov     %eax, %cr0
    ljmp    $SEL_CODE64, $PA(3f)

    .code64
3:  movabs  $high_entry, %rax
    jmp     *%rax

high_entry:
    lgdt    gdt_desc64(%rip)
    mov     $SEL_DATA, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    lea     boot_stack_top(%rip), %rsp
    mov     %ebp, %edi                  /* zero-extended start info paddr */
    call    kmain
4:  cli
    hlt
    jmp     4b

/* ------------------------------------------------------------------------
 * The kernel-function page at HVFG_KFUNC_VA (the linker script places
 * .text.kfunc there): kfunc at offset 0, kfunc2 at 0x800, dbgfunc at 0xc00,
 * kfunc2's constant at 0xf00.  uint64_t kfunc(uint64_t proc, uint64_t x)
 *
 * Its first instruction (KFUNC_INSN, 8 bytes, no RIP-relative operand) is
 * what a VMI tool overwrites with int3; its result feeds everything after
 * it, so skipping or mis-emulating it changes the return value.  The same
 * bytes are assembled again into kfunc_insn (rodata) as the reference.
 */
#define KFUNC_INSN lea 0x5bd1e995(%rsi,%rdi,8), %rax

    .section .text.kfunc, "ax"
    .globl kfunc
    .type kfunc, @function
kfunc:
    KFUNC_INSN                          /* rax = x + 8 * proc + 0x5bd1e995 */
kfunc_after_insn:
    /* count the call in an update group of the info page (see info.h),
     * which opens only after the first instruction */
    incq    (HVFG_INFO_VA + HVFG_OFF_GEN_START)
    cmp     $HVFG_NPROC_MAX, %rdi
    jae     1f
    imul    $HVFG_PROC_SIZE, %rdi, %rcx
    incq    (HVFG_INFO_VA + HVFG_OFF_PROC + HVFG_PROC_OFF_CALLS)(%rcx)
1:  incq    (HVFG_INFO_VA + HVFG_OFF_CALLS)
    mov     (HVFG_INFO_VA + HVFG_OFF_GEN_START), %rcx
    mov     %rcx, (HVFG_INFO_VA + HVFG_OFF_GEN_DONE)
    mov     %rax, %rdx
    shr     $29, %rdx
    xor     %rdx, %rax
    imul    $0x27d4eb2d, %rax, %rax
    mov     %rax, %rdx
    shr     $32, %rdx
    xor     %rdx, %rax
    ret
    .size kfunc, . - kfunc

/* uint64_t kfunc2(uint64_t proc, uint64_t x), at HVFG_KFUNC2_VA (calls2=).
 * Its first instruction loads an 8-byte constant RIP-relatively: emulating
 * it anywhere but at its own address (or copying it out of line without
 * relocating the displacement) loads something else. */
#define KFUNC2_INSN .byte 0x48, 0x8b, 0x05; .long kfunc2_k - kfunc2_after_insn
    .org kfunc + HVFG_KFUNC2_OFF
    .globl kfunc2
    .type kfunc2, @function
kfunc2:
    KFUNC2_INSN                         /* mov kfunc2_k(%rip), %rax */
kfunc2_after_insn:
    incq    (HVFG_INFO_VA + HVFG_OFF_GEN_START)
    incq    (HVFG_INFO_VA + HVFG_OFF_CALLS2)
    mov     (HVFG_INFO_VA + HVFG_OFF_GEN_START), %rcx
    mov     %rcx, (HVFG_INFO_VA + HVFG_OFF_GEN_DONE)
    xor     %rsi, %rax
    add     %rdi, %rax
    mov     %rax, %rdx
    shr     $27, %rdx
    xor     %rdx, %rax
    imul    $0x165667b1, %rax, %rax
    ret
    .size kfunc2, . - kfunc2
/* void dbgfunc(uint64_t n), at HVFG_DBG_VA (tf=): sets RFLAGS.TF, runs a
 * loop of n iterations (dec + jnz) and clears TF again.  Every instruction
 * that starts with TF set ends in a single-step #DB trap: 2n for the loop,
 * then pushfq, andq and the popfq that clears TF: 2n + 3 in all, each with
 * its RIP inside this function. */
    .org kfunc + HVFG_DBG_OFF
    .globl dbgfunc, dbgfunc_end
dbgfunc:
    pushfq
    orq     $0x100, (%rsp)
    popfq                               /* TF = 1 from the next instruction on */
1:  dec     %rdi
    jnz     1b
    pushfq
    andq    $~0x100, (%rsp)
    popfq                               /* TF = 0; this one still traps */
    ret
dbgfunc_end:
    .org kfunc + HVFG_DBG_OFF + HVFG_DBG_LEN

    .org kfunc + HVFG_KFUNC2_K_OFF
kfunc2_k:
    .quad 0x9e3779b97f4a7c15

    .section .rodata
    .globl kfunc2_insn, kfunc2_insn_len, kfunc2_resume, kfunc2_k_addr
kfunc2_insn:
    KFUNC2_INSN
kfunc2_insn_end:
    .balign 4
kfunc2_insn_len:
    .long kfunc2_insn_end - kfunc2_insn
    .balign 8
kfunc2_resume:
    .quad kfunc2_after_insn
kfunc2_k_addr:
    .quad kfunc2_k

    .globl kfunc_insn, kfunc_insn_len, kfunc_resume
kfunc_insn:
    KFUNC_INSN
kfunc_insn_end:
    .balign 4
kfunc_insn_len:
    .long kfunc_insn_end - kfunc_insn
    .balign 8
kfunc_resume:                           /* where the original instruction ends */
    .quad kfunc_after_insn

/* ------------------------------------------------------------------------
 * The user page (user=1), linked at HVFG_KBASE + HVFG_UPAGE_GPA but executed
 * at HVFG_UPAGE_VA in ring 3: position-independent code only (relative
 * branches inside the page, absolute addresses only for the private page).
 *
 * uint64_t ufunc(uint64_t proc, uint64_t x), at HVFG_UFUNC_VA.  Its first
 * instruction UFUNC_INSN (7 bytes, writes RAX and flags) is where a VMI tool
 * plants a user-space breakpoint; the same bytes are in ufunc_insn.
 */
#define UFUNC_INSN imul $0x2545f491, %rsi, %rax
#define PRIV(off) (HVFG_PRIV_VA + HVFG_PRIV_OFF_##off)

    .section .text.user, "ax"
    .globl ufunc
ufunc:
    UFUNC_INSN                          /* rax = x * 0x2545f491 */
ufunc_after_insn:
    add     %rdi, %rax
    mov     %rax, %rdx
    shr     $31, %rdx
    xor     %rdx, %rax
    incq    PRIV(UCALLS)
    ret

/* user_main(proc %rdi, work %rsi, ucalls %rdx, x0 %rcx), at
 * HVFG_UPAGE_VA + HVFG_UMAIN_OFF: the work units on the private page, then
 * ucalls calls of ufunc folded into RAX; back to the kernel with int $0x80. */
    .org ufunc + HVFG_UMAIN_OFF
user_main:
    mov     %rdi, %r12                  /* proc */
    mov     %rdx, %r13                  /* ucalls */
    mov     %rcx, %r14                  /* x0 */
    xor     %r15d, %r15d                /* acc */
    xor     %ebx, %ebx                  /* address-space check failures */
    movabs  $HVFG_PRIV_MAGIC, %r8
    mov     PRIV(STATE), %r9
    movabs  $6364136223846793005, %r10
    movabs  $1442695040888963407, %r11
    test    %rsi, %rsi
    jz      3f
1:  cmp     %r8, PRIV(MAGIC)
    jne     2f
    cmp     %r12, PRIV(OWNER)
    je      4f
2:  inc     %rbx
4:  imul    %r10, %r9
    add     %r11, %r9
    mov     %r9, PRIV(STATE)
    incq    PRIV(WORK)
    dec     %rsi
    jnz     1b
3:  add     %rbx, PRIV(BAD)
    xor     %ebp, %ebp                  /* call index */
5:  cmp     %r13, %rbp
    jae     6f
    mov     %r12, %rdi
    lea     (%r14,%rbp), %rsi
    call    ufunc
    rol     $7, %r15
    xor     %rax, %r15
    inc     %rbp
    jmp     5b
6:  mov     %r15, %rax
    int     $0x80                       /* back to the kernel; never returns */
    ud2

    .org ufunc + HVFG_UTRAMP_OFF
    .globl utramp_area
utramp_area:                            /* two trampolines, filled at boot */
    .fill 64, 1, 0xcc

    .section .rodata
    .globl ufunc_insn, ufunc_insn_len, ufunc_resume_off
ufunc_insn:
    UFUNC_INSN
ufunc_insn_end:
    .balign 4
ufunc_insn_len:
    .long ufunc_insn_end - ufunc_insn
ufunc_resume_off:                       /* offset of the end of the instruction */
    .long ufunc_after_insn - ufunc

/* ------------------------------------------------------------------------
 * Ring transitions (user=1).
 * uint64_t enter_user(rip, rsp, a0, a1, a2, a3): run user code at CPL 3 with
 * a0..a3 in rdi, rsi, rdx, rcx, interrupts off; returns the RAX that the user
 * code passes to int $0x80 (vector 0x80, a DPL-3 gate entered on TSS.rsp0).
 */
    .text
    .globl enter_user, user_return
enter_user:
    push    %rbx
    push    %rbp
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, user_saved_rsp(%rip)
    pushq   $SEL_UDATA
    push    %rsi
    pushq   $0x2                        /* RFLAGS: IF = 0 */
    pushq   $SEL_UCODE
    push    %rdi
    mov     %rdx, %rdi
    mov     %rcx, %rsi
    mov     %r8, %rdx
    mov     %r9, %rcx
    xor     %eax, %eax
    xor     %ebx, %ebx
    xor     %ebp, %ebp
    xor     %r8d, %r8d
    xor     %r9d, %r9d
    xor     %r10d, %r10d
    xor     %r11d, %r11d
    xor     %r12d, %r12d
    xor     %r13d, %r13d
    xor     %r14d, %r14d
    xor     %r15d, %r15d
    iretq

user_return:
    mov     user_saved_rsp(%rip), %rsp
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbp
    pop     %rbx
    ret

/* ------------------------------------------------------------------------
 * Exception entry: push a uniform frame and call exception_handler(frame).
 * The handler may change frame->rip (selftest_int3 / #BP recovery).
 */
    .text
.macro EXC vec, err
exc\vec:
    .if \err == 0
    pushq   $0
    .endif
    pushq   $\vec
    jmp     exc_common
.endm
    EXC 0,0
    EXC 1,0
    EXC 2,0
    EXC 3,0
    EXC 4,0
    EXC 5,0
    EXC 6,0
    EXC 7,0
    EXC 8,1
    EXC 9,0
    EXC 10,1
    EXC 11,1
    EXC 12,1
    EXC 13,1
    EXC 14,1
    EXC 15,0
    EXC 16,0
    EXC 17,1
    EXC 18,0
    EXC 19,0
    EXC 20,0
    EXC 21,1
    EXC 22,0
    EXC 23,0
    EXC 24,0
    EXC 25,0
    EXC 26,0
    EXC 27,0
    EXC 28,0
    EXC 29,1
    EXC 30,1
    EXC 31,0

/* Vectors 32-255: no interrupt source is ever enabled, so any interrupt is
 * unexpected; count it and return (no EOI: nothing should be asking). */
irq_spurious:
    lock incq (HVFG_INFO_VA + HVFG_OFF_SPURIOUS)
    iretq

exc_common:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %rbp
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, %rdi
    cld
    call    exception_handler
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rbp
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rbx
    pop     %rax
    add     $16, %rsp                   /* vector, error code */
    iretq

    .section .rodata
    .balign 8
    .globl exc_table
exc_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc\n
    .endr
    .globl irq_spurious_addr
irq_spurious_addr:
    .quad irq_spurious

/* ------------------------------------------------------------------------
 * GDT: null, 64-bit code, data, 32-bit code, TSS (16 bytes, filled by C).
 */
    .data
    .balign 16
    .globl gdt
gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00cf9a000000ffff
    .quad 0, 0                          /* 0x20: TSS */
    .quad 0x00cff2000000ffff            /* 0x30: user data, DPL 3 */
    .quad 0x00affa000000ffff            /* 0x38: user code 64, DPL 3 */
gdt_end:
    .balign 8
    .word 0, 0, 0
gdt_desc32:
    .word gdt_end - gdt - 1
    .long PA(gdt)
    .balign 8
    .word 0, 0, 0
gdt_desc64:
    .word gdt_end - gdt - 1
    .quad gdt

    .globl boot_cr3_writes
    .balign 8
boot_cr3_writes:
    .quad 0
user_saved_rsp:
    .quad 0

/* ------------------------------------------------------------------------
 * Boot page tables and stacks (zero-filled by the loader; the tables are
 * cleared again above).  boot_pdpt_hi is shared by every process root.
 */
    .section .bss.pgt_boot, "aw", @nobits     /* at HVFG_BOOT_CR3 (guest.ld) */
    .balign 4096
    .globl boot_pml4, boot_pdpt_lo, boot_pdpt_hi, boot_pd
boot_pml4:    .skip 4096
boot_pdpt_lo: .skip 4096
boot_pdpt_hi: .skip 4096
boot_pd:      .skip 4096

    .section .bss
    .balign 16
    .globl boot_stack_top, ist_stack_top
boot_stack:   .skip 16384
boot_stack_top:
ist_stack:    .skip 8192
ist_stack_top:
    .globl kstack0_top
kstack0:      .skip 8192                /* TSS.rsp0: entries from ring 3 */
kstack0_top:
