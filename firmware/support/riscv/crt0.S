/* RISC-V (rv32) start-up for the emulated boards: stack, gp, .data/.bss, trap vector,
 * and the semihosting call sequence (uncompressed, 16-byte aligned). Only x0-x15: RV32E too. */
    .section .text.init, "ax", @progbits
    .globl _start
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, _estack
    la t0, kan2mcu_trap
    csrw mtvec, t0
    la t0, _sidata
    la t1, _sdata
    la t2, _edata
1:  bgeu t1, t2, 2f
    lw a2, 0(t0)
    sw a2, 0(t1)
    addi t0, t0, 4
    addi t1, t1, 4
    j 1b
2:  la t1, _sbss
    la t2, _ebss
3:  bgeu t1, t2, 4f
    sw zero, 0(t1)
    addi t1, t1, 4
    j 3b
4:  call kan2mcu_start
5:  j 5b

    .balign 4
kan2mcu_trap:
    la sp, _estack
    call kan2mcu_fault
6:  j 6b

/* uintptr_t kan2mcu_semihost(uintptr_t op, const void *arg): a0 = op, a1 = arg. */
    .section .text.kan2mcu_semihost, "ax", @progbits
    .globl kan2mcu_semihost
    .balign 16
kan2mcu_semihost:
    .option push
    .option norvc
    slli x0, x0, 0x1f
    ebreak
    srai x0, x0, 7
    .option pop
    ret
