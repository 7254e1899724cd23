/* ARM/RISC-V semihosting calls used by the emulated boards (QEMU -semihosting-config). */
#ifndef KAN2MCU_SEMIHOST_H
#define KAN2MCU_SEMIHOST_H
#include <stdint.h>

#define KAN2MCU_SYS_WRITE0 0x04
#define KAN2MCU_SYS_EXIT_EXTENDED 0x20
#define KAN2MCU_ADP_STOPPED_APPLICATION_EXIT 0x20026

/* Issue semihosting operation op with parameter arg; returns the host's result. */
uintptr_t kan2mcu_semihost(uintptr_t op, const void *arg);
void kan2mcu_semihost_write0(const char *s);
/* Stop the emulator; code becomes QEMU's exit status. Does not return. */
void kan2mcu_semihost_exit(int code) __attribute__((noreturn));

#endif /* KAN2MCU_SEMIHOST_H */
