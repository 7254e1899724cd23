"""SCons build script of the kan2mcu QEMU platform.

Compiles the project sources (model + self-check main.c) with the board's CPU flags at -O2,
freestanding, no libc (-nostdlib, libgcc only, for the 64-bit and soft-float helpers), adds the
start-up code, semihosting port and memory functions from ``support/`` (compiled with
-fno-tree-loop-distribute-patterns) and links with ``ldscripts/<arch>.ld`` plus a ``memory.ld``
written here from the board's flash/RAM origin and size.

Targets: default (build + size), ``size``, ``upload`` (runs the firmware in QEMU; its exit status,
0 on PASS, becomes the build's status). ``KAN2MCU_QEMU_TIMEOUT`` (seconds, default 120) bounds a run.
"""
import os
import subprocess
import sys

from SCons.Script import AlwaysBuild, Default, DefaultEnvironment

env = DefaultEnvironment()
platform = env.PioPlatform()
board = env.BoardConfig()

PLATFORM_DIR = platform.get_dir()
SUPPORT_DIR = os.path.join(PLATFORM_DIR, "support")
ARCH = board.get("build.arch")
PREFIX = "arm-none-eabi-" if ARCH == "arm" else "riscv64-unknown-elf-"
CPU_FLAGS = board.get("build.cpu_flags").split()

env.Replace(
    AR=PREFIX + "ar",
    AS=PREFIX + "gcc",
    CC=PREFIX + "gcc",
    CXX=PREFIX + "g++",
    OBJCOPY=PREFIX + "objcopy",
    RANLIB=PREFIX + "ranlib",
    SIZETOOL=PREFIX + "size",
    ARFLAGS=["rc"],
    SIZEPROGREGEXP=r"^(?:\.isr_vector|\.text|\.rodata|\.ARM\.exidx|\.data|\.sdata)\s+(\d+).*",
    SIZEDATAREGEXP=r"^(?:\.data|\.sdata|\.bss|\.sbss)\s+(\d+).*",
    SIZECHECKCMD="$SIZETOOL -A -d $SOURCES",
    SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
    PROGNAME="firmware",
    PROGSUFFIX=".elf",
)

env.Append(
    ASFLAGS=CPU_FLAGS + ["-x", "assembler-with-cpp"],
    CCFLAGS=CPU_FLAGS + [
        "-O2",
        "-g",
        "-ffreestanding",
        "-fno-common",
        "-ffunction-sections",
        "-fdata-sections",
        "-Wall",
        "-Wextra",
    ],
    CFLAGS=["-std=c99"],
    CPPDEFINES=[("F_CPU", board.get("build.f_cpu")), "KAN2MCU_QEMU"],
    LINKFLAGS=CPU_FLAGS + [
        "-nostdlib",
        "-nostartfiles",
        "-Wl,--gc-sections",
        "-Wl,-Map,${BUILD_DIR}/firmware.map",
    ],
    LIBS=["gcc"],
)

# memory.ld: the board's memory regions, included by the linker script.
build_dir = env.subst("$BUILD_DIR")
os.makedirs(build_dir, exist_ok=True)
memory_ld = (
    "/* written by the kan2mcu platform from boards/%s.json */\n"
    "MEMORY\n{\n"
    "    FLASH (rx) : ORIGIN = %s, LENGTH = %d\n"
    "    RAM (rwx) : ORIGIN = %s, LENGTH = %d\n"
    "}\n"
    % (
        env.subst("$BOARD"),
        board.get("build.flash_origin"),
        int(board.get("upload.maximum_size")),
        board.get("build.ram_origin"),
        int(board.get("upload.maximum_ram_size")),
    )
)
memory_ld_path = os.path.join(build_dir, "memory.ld")
if not os.path.isfile(memory_ld_path) or open(memory_ld_path).read() != memory_ld:
    with open(memory_ld_path, "w") as handle:
        handle.write(memory_ld)
env.Append(LIBPATH=[build_dir, os.path.join(PLATFORM_DIR, "ldscripts")])
env.Replace(LDSCRIPT_PATH=os.path.join(PLATFORM_DIR, "ldscripts", board.get("build.ldscript")))

# Start-up, semihosting port and memory functions: loops must stay loops.
support_env = env.Clone()
support_env.Append(
    CCFLAGS=["-fno-tree-loop-distribute-patterns"],
    CPPPATH=[os.path.join(SUPPORT_DIR, "common"), os.path.join(PLATFORM_DIR, "port")],
)
support_env.BuildSources(
    os.path.join("$BUILD_DIR", "kan2mcu_support", "common"), os.path.join(SUPPORT_DIR, "common")
)
support_env.BuildSources(
    os.path.join("$BUILD_DIR", "kan2mcu_support", ARCH),
    os.path.join(SUPPORT_DIR, "cortexm" if ARCH == "arm" else "riscv"),
)

target_elf = env.BuildProgram()
env.Depends(target_elf, memory_ld_path)  # a changed memory map relinks (the linker script INCLUDEs it)
AlwaysBuild(env.Alias("nobuild", target_elf))

target_size = env.AddPlatformTarget(
    "size",
    target_elf,
    env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE"),
    "Program Size",
    "Calculate program size",
)


def _run_in_qemu(target, source, env):  # pylint: disable=unused-argument
    command = [
        board.get("upload.qemu_system"),
        "-M",
        board.get("upload.qemu_machine"),
    ]
    if board.get("upload.qemu_cpu", ""):
        command += ["-cpu", board.get("upload.qemu_cpu")]  # e.g. rv32 without M: a multiply traps
    if ARCH == "riscv":
        command += ["-bios", "none"]
    command += [
        "-nographic", "-monitor", "none", "-serial", "none",
        "-semihosting-config", "enable=on,target=native",
        "-icount", "shift=0",
        "-kernel", source[0].get_abspath(),
    ]
    timeout = float(os.environ.get("KAN2MCU_QEMU_TIMEOUT", "120"))
    print(" ".join(command))
    sys.stdout.flush()
    try:
        result = subprocess.run(command, timeout=timeout, check=False)
    except FileNotFoundError:
        sys.stderr.write("Error: %s not found (apt-get install qemu-system-arm qemu-system-misc)\n" % command[0])
        return 127
    except subprocess.TimeoutExpired:
        sys.stderr.write("Error: QEMU run timed out after %.0f s\n" % timeout)
        return 124
    if result.returncode != 0:
        sys.stderr.write("Error: firmware exited with status %d (1 = self-check FAIL, 3 = fault)\n" % result.returncode)
    return result.returncode


env.AddPlatformTarget("upload", target_elf, env.VerboseAction(_run_in_qemu, "Running $SOURCE in QEMU"), "Upload")

Default([target_elf, target_size])
