# CMake toolchain file for arm-none-eabi-gcc (bare metal). Written by kan2mcu.
#   cmake -S . -B build -DCMAKE_TOOLCHAIN_FILE=cmake/arm-none-eabi.cmake -DKAN2MCU_CPU_FLAGS="-mcpu=cortex-m4 -mthumb"
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_AR arm-none-eabi-ar)
set(CMAKE_RANLIB arm-none-eabi-ranlib)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(KAN2MCU_CPU_FLAGS "-mcpu=cortex-m4 -mthumb" CACHE STRING "CPU flags of the target")
set(CMAKE_C_FLAGS_INIT "${KAN2MCU_CPU_FLAGS} -ffreestanding -ffunction-sections -fdata-sections")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
