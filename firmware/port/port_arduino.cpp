/* kan2mcu port for real boards (Arduino framework on every supported platform).
 * Runs the self-check once in setup(), then repeats the result line every second so that a
 * host opening the serial port after the reset still reads it.
 * Cycle counters: DWT->CYCCNT (ARMv7-M/ARMv7E-M: Cortex-M3/M4/M7), SysTick (ARMv6-M:
 * Cortex-M0/M0+, 24-bit down-counter: one inference must stay below 2^24 cycles),
 * mcycle (RISC-V), the ESP32-C3 vendor counter via ESP.getCycleCount(). */
#include <Arduino.h>
#include <stdint.h>

#include "kan2mcu_port.h"

#define KAN2MCU_BAUD 115200
#define KAN2MCU_REPEAT_MS 1000u

static const char *kan2mcu_last_line = "";
static int kan2mcu_status = -1;

#define KAN2MCU_REG(address) (*(volatile uint32_t *)(address))

extern "C" void kan2mcu_port_init(void)
{
#if defined(ARDUINO_ARCH_ESP32) || defined(__riscv)
    /* free-running counters, nothing to start */
#elif defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
    KAN2MCU_REG(0xE000EDFCu) |= (1u << 24);   /* DEMCR.TRCENA */
    KAN2MCU_REG(0xE0001FB0u) = 0xC5ACCE55u;   /* DWT lock access (Cortex-M7) */
    KAN2MCU_REG(0xE0001004u) = 0u;            /* DWT->CYCCNT */
    KAN2MCU_REG(0xE0001000u) |= 1u;           /* DWT->CTRL.CYCCNTENA */
#elif defined(__ARM_ARCH_6M__)
    /* SysTick may already serve the core's tick; only start it when it is off. */
    if ((KAN2MCU_REG(0xE000E010u) & 1u) == 0u) {
        KAN2MCU_REG(0xE000E014u) = 0x00FFFFFFu; /* SYST_RVR */
        KAN2MCU_REG(0xE000E018u) = 0u;          /* SYST_CVR */
        KAN2MCU_REG(0xE000E010u) = 5u;          /* SYST_CSR: processor clock, enable */
    }
#endif
}

extern "C" uint32_t kan2mcu_port_cycles(void)
{
#if defined(ARDUINO_ARCH_ESP32)
    return (uint32_t)ESP.getCycleCount();
#elif defined(__riscv)
    uint32_t value;
    __asm__ volatile("csrr %0, mcycle" : "=r"(value));
    return value;
#elif defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
    return KAN2MCU_REG(0xE0001004u);
#elif defined(__ARM_ARCH_6M__)
    /* down-counter: negate so that stop - start is the elapsed count (mod 2^24) */
    return (0u - KAN2MCU_REG(0xE000E018u)) & 0x00FFFFFFu;
#else
    return 0u;
#endif
}

extern "C" const char *kan2mcu_port_counter(void)
{
#if defined(ARDUINO_ARCH_ESP32)
    return "esp_cpu_cycle_count";
#elif defined(__riscv)
    return "mcycle";
#elif defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
    return "DWT_CYCCNT";
#elif defined(__ARM_ARCH_6M__)
    return "SysTick";
#else
    return "none";
#endif
}

extern "C" void kan2mcu_port_write_line(const char *s)
{
    kan2mcu_last_line = s;
    Serial.println(s);
    Serial.flush();
}

extern "C" void kan2mcu_port_stack_paint(void)
{
}

extern "C" int32_t kan2mcu_port_stack_used(void)
{
    return -1;
}

void setup()
{
    Serial.begin(KAN2MCU_BAUD);
    while (!Serial && millis() < 3000u) {
        delay(10);
    }
    kan2mcu_port_init();
    kan2mcu_status = kan2mcu_main();
}

void loop()
{
    delay(KAN2MCU_REPEAT_MS);
    Serial.println(kan2mcu_last_line);
}
