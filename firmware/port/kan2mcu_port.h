/* kan2mcu firmware port interface: what main.c needs from a board.
 * Implemented by support/common/port_qemu.c (emulated boards, semihosting) and by
 * port_arduino.cpp (real boards, serial port). */
#ifndef KAN2MCU_PORT_H
#define KAN2MCU_PORT_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* Start the cycle counter (if the board has one). */
void kan2mcu_port_init(void);
/* Current value of the cycle counter (free-running, wraps); 0 when there is none. */
uint32_t kan2mcu_port_cycles(void);
/* Name of the cycle counter: "DWT_CYCCNT", "SysTick", "mcycle", "esp_cpu_cycle_count" or "none". */
const char *kan2mcu_port_counter(void);
/* Emit one line of text (no trailing newline in s). */
void kan2mcu_port_write_line(const char *s);
/* Fill the unused stack with a pattern; kan2mcu_port_stack_used() returns the high-water mark
 * in bytes since the last paint, or -1 when the port cannot tell. */
void kan2mcu_port_stack_paint(void);
int32_t kan2mcu_port_stack_used(void);

/* Implemented by main.c: runs the self-check, returns 0 on PASS, 1 on FAIL. */
int kan2mcu_main(void);

#ifdef __cplusplus
}
#endif
#endif /* KAN2MCU_PORT_H */
