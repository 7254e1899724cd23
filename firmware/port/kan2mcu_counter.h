/* kan2mcu cycle counter arithmetic for short or wrapping hardware counters (host-tested).
 * A down-counter such as SysTick (24 bits, or the core's 1 ms tick period) wraps during an
 * inference; a coarse clock (microseconds) tells how many times, the fine counter gives the
 * exact cycles within the period. */
#ifndef KAN2MCU_COUNTER_H
#define KAN2MCU_COUNTER_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* Cycles counted down from start to now by a counter that reloads to period - 1 after 0
 * (SysTick: period = RVR + 1, values 0..RVR), modulo period. */
uint32_t kan2mcu_down_elapsed(uint32_t start, uint32_t now, uint32_t period);

/* The cycle count that is fine (mod period) and nearest to coarse: the exact elapsed cycles when
 * the coarse estimate is within period / 2 of the truth. Result modulo 2^32. */
uint32_t kan2mcu_compose_cycles(uint32_t fine, uint32_t period, uint64_t coarse);

#ifdef __cplusplus
}
#endif
#endif /* KAN2MCU_COUNTER_H */
