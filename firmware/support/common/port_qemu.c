/* kan2mcu port for the emulated (QEMU) boards: output and exit via semihosting,
 * stack painting between the end of .bss and the initial stack pointer.
 * QEMU does not model DWT->CYCCNT; on RISC-V mcycle counts instructions under -icount. */
#include <stdint.h>
#include "kan2mcu_port.h"
#include "semihost.h"

extern uint32_t _stack_bottom; /* linker script: end of .bss, rounded up */
extern uint32_t _estack;       /* linker script: initial stack pointer */

#define KAN2MCU_STACK_PATTERN 0xC5C5C5C5u
#define KAN2MCU_STACK_MARGIN 64u /* bytes below the live stack pointer left unpainted */

static volatile uint32_t *kan2mcu_painted_top;

void kan2mcu_port_init(void)
{
}

uint32_t kan2mcu_port_cycles(void)
{
#if defined(__riscv)
    uint32_t value;
    __asm__ volatile("csrr %0, mcycle" : "=r"(value));
    return value;
#else
    return 0u;
#endif
}

const char *kan2mcu_port_counter(void)
{
#if defined(__riscv)
    return "mcycle";
#else
    return "none";
#endif
}

void kan2mcu_port_write_line(const char *s)
{
    kan2mcu_semihost_write0(s);
    kan2mcu_semihost_write0("\n");
}

void kan2mcu_port_stack_paint(void)
{
    volatile uint32_t *word = (volatile uint32_t *)&_stack_bottom;
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    volatile uint32_t *top = (volatile uint32_t *)((sp - KAN2MCU_STACK_MARGIN) & ~(uintptr_t)3u);
    while (word < top) {
        *word++ = KAN2MCU_STACK_PATTERN;
    }
    kan2mcu_painted_top = top;
}

int32_t kan2mcu_port_stack_used(void)
{
    volatile uint32_t *word = (volatile uint32_t *)&_stack_bottom;
    if (kan2mcu_painted_top == 0) {
        return -1;
    }
    while (word < kan2mcu_painted_top && *word == KAN2MCU_STACK_PATTERN) {
        ++word;
    }
    return (int32_t)((uintptr_t)&_estack - (uintptr_t)word);
}

void kan2mcu_semihost_write0(const char *s)
{
    kan2mcu_semihost(KAN2MCU_SYS_WRITE0, s);
}

void kan2mcu_semihost_exit(int code)
{
    static uintptr_t block[2];
    block[0] = KAN2MCU_ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uintptr_t)code;
    kan2mcu_semihost(KAN2MCU_SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}

/* Called by the start-up code once memory is initialised. */
void kan2mcu_start(void) __attribute__((noreturn));
void kan2mcu_start(void)
{
    kan2mcu_port_init();
    kan2mcu_semihost_exit(kan2mcu_main());
}

/* Any unexpected trap: report it and stop with exit status 3. */
void kan2mcu_fault(void) __attribute__((noreturn));
void kan2mcu_fault(void)
{
    kan2mcu_semihost_write0("KAN2MCU_FAULT unexpected exception or trap\n");
    kan2mcu_semihost_exit(3);
}
