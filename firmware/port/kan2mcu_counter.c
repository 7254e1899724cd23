/* kan2mcu cycle counter arithmetic (see kan2mcu_counter.h); compiled on the board and by the
 * host tests (host_tests/test_export_counters.py), which drive it with simulated wraps. */
#include "kan2mcu_counter.h"

uint32_t kan2mcu_down_elapsed(uint32_t start, uint32_t now, uint32_t period)
{
    if (period == 0u) {
        return 0u;
    }
    start %= period;
    now %= period;
    return start >= now ? start - now : start + (period - now);
}

uint32_t kan2mcu_compose_cycles(uint32_t fine, uint32_t period, uint64_t coarse)
{
    uint64_t wraps;
    if (period == 0u) {
        return (uint32_t)coarse;
    }
    fine %= period;
    if (coarse <= (uint64_t)fine) {
        return fine;
    }
    /* nearest whole number of periods between fine and coarse */
    wraps = (coarse - (uint64_t)fine + (uint64_t)(period / 2u)) / (uint64_t)period;
    return (uint32_t)((uint64_t)fine + wraps * (uint64_t)period);
}
