/* kan2mcu port for real boards (Arduino framework on every supported platform).
 * Runs the self-check once in setup(), then repeats the result line every second so that a
 * host opening the serial port after the reset still reads it.
 * Cycle counters: DWT->CYCCNT (ARMv7-M/ARMv7E-M/ARMv8-M mainline: Cortex-M3/M4/M7/M33/M55), mcycle
 * (RISC-V), micros() x F_CPU/10^6 on RV32E (CH32V003: its QingKe V2A core has no mcycle), the ESP32-C3
 * vendor counter via ESP.getCycleCount(), and on ARMv6-M (Cortex-M0/M0+, e.g. the RP2040 of the
 * Pico) SysTick combined with micros(): SysTick gives the cycles within its period (24 bits, or
 * the core's 1 ms tick when the core already runs it; masked and wrap-corrected), micros() how
 * many periods passed (kan2mcu_counter.c), so an inference of any length is timed exactly.
 * As with DWT, cycles spent in interrupts during the inference are counted. */
#include <Arduino.h>
#include <stdint.h>

#include "kan2mcu_counter.h"
#include "kan2mcu_port.h"

#define KAN2MCU_BAUD 115200
#define KAN2MCU_REPEAT_MS 1000u

static const char *kan2mcu_last_line = "";
static int kan2mcu_status = -1;

#define KAN2MCU_REG(address) (*(volatile uint32_t *)(address))

#if defined(__ARM_ARCH_6M__)
static uint32_t kan2mcu_systick_origin;
static uint32_t kan2mcu_micros_origin;
#endif

extern "C" void kan2mcu_port_init(void)
{
#if defined(ARDUINO_ARCH_ESP32) || defined(__riscv)
    /* free-running counters, nothing to start */
#elif defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__) || \
    defined(__ARM_ARCH_8_1M_MAIN__)
    KAN2MCU_REG(0xE000EDFCu) |= (1u << 24);   /* DEMCR.TRCENA */
    KAN2MCU_REG(0xE0001FB0u) = 0xC5ACCE55u;   /* DWT lock access (Cortex-M7) */
    KAN2MCU_REG(0xE0001004u) = 0u;            /* DWT->CYCCNT */
    KAN2MCU_REG(0xE0001000u) |= 1u;           /* DWT->CTRL.CYCCNTENA */
#elif defined(__ARM_ARCH_6M__)
    /* SysTick may already serve the core's tick (then its period is the tick's); only start it,
     * free-running over 24 bits without interrupt, when it is off. */
    if ((KAN2MCU_REG(0xE000E010u) & 1u) == 0u) {
        KAN2MCU_REG(0xE000E014u) = 0x00FFFFFFu; /* SYST_RVR */
        KAN2MCU_REG(0xE000E018u) = 0u;          /* SYST_CVR */
        KAN2MCU_REG(0xE000E010u) = 5u;          /* SYST_CSR: processor clock, enable */
    }
    kan2mcu_systick_origin = KAN2MCU_REG(0xE000E018u) & 0x00FFFFFFu;
    kan2mcu_micros_origin = (uint32_t)micros();
#endif
}

extern "C" uint32_t kan2mcu_port_cycles(void)
{
#if defined(ARDUINO_ARCH_ESP32)
    return (uint32_t)ESP.getCycleCount();
#elif defined(__riscv_e)
    return (uint32_t)micros() * (uint32_t)(F_CPU / 1000000UL);  /* 1 us resolution */
#elif defined(__riscv)
    uint32_t value;
    /* csrr value, mcycle (CSR 0xB00) as a raw instruction: assembles with or without Zicsr in -march */
    __asm__ volatile(".insn i 0x73, 2, %0, x0, -1280" : "=r"(value));
    return value;
#elif defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__) || \
    defined(__ARM_ARCH_8_1M_MAIN__)
    return KAN2MCU_REG(0xE0001004u);
#elif defined(__ARM_ARCH_6M__)
    /* cycles since kan2mcu_port_init: SysTick within its period, micros() for the wraps */
    uint32_t period = (KAN2MCU_REG(0xE000E014u) & 0x00FFFFFFu) + 1u;
    uint32_t now = KAN2MCU_REG(0xE000E018u) & 0x00FFFFFFu;
    uint32_t us = (uint32_t)micros() - kan2mcu_micros_origin;
    uint64_t coarse = (uint64_t)us * (uint64_t)(F_CPU / 1000000UL);
    return kan2mcu_compose_cycles(kan2mcu_down_elapsed(kan2mcu_systick_origin, now, period), period, coarse);
#else
    return 0u;
#endif
}

extern "C" const char *kan2mcu_port_counter(void)
{
#if defined(ARDUINO_ARCH_ESP32)
    return "esp_cpu_cycle_count";
#elif defined(__riscv_e)
    return "micros";
#elif defined(__riscv)
    return "mcycle";
#elif defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__) || \
    defined(__ARM_ARCH_8_1M_MAIN__)
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
