"""Cycle ESTIMATES from executed instructions (never measured cycles).

QEMU executes instructions, not a pipeline: it has no caches, wait states, bus contention or
pipeline model. kan2mcu therefore turns the exact executed-instruction trace of one inference
(instruction address, disassembly, execution count, taken count) into an ESTIMATE with per-core
cost tables. Every figure from this module is an ESTIMATE and is labelled so.

Sources (instruction timing tables):

* Cortex-M0: ARM DDI 0432C, Cortex-M0 Technical Reference Manual, 3.3 "Instruction set summary":
  ALU 1, LDR/STR 2, LDM/STM/PUSH/POP 1+N, POP {..,PC} 4+N, B<cond> 3 taken / 1 not taken, B 3,
  BL 4, BX/BLX 3, MULS 1 (fast multiplier option; the 32-cycle small multiplier is not assumed).
* Cortex-M0+: ARM DDI 0484C, 3.3: as M0 but two-stage pipeline: taken branches 2, BL 3, BX 2,
  POP {..,PC} 3+N.
* Cortex-M3: ARM DDI 0337I, 18.2 "Instruction timings": ALU 1, MUL 1, MLA/MLS 2,
  UMULL/SMULL 3-5 (4 assumed), UMLAL/SMLAL 4-7 (5 assumed), SDIV/UDIV 2-12 (7 assumed),
  LDR 2, STR 2 (no credit for pipelined neighbouring loads/stores), LDM/STM/PUSH/POP 1+N,
  branches 1+P with P = 1..3 pipeline refill (P = 2 assumed): taken 3, not taken 1; CBZ/CBNZ same.
* Cortex-M4: ARM DDI 0439B, 3.3: as M3 except MLA/MLS, UMULL/SMULL/UMLAL/SMLAL and the DSP
  multiplies (SMLA*, SMUL*, SMLAD, ...) 1; FPv4-SP (4.3 "FPU instruction set"): VADD/VSUB/VMUL/VNEG/VABS/
  VCVT/VCMP/VMOV 1, VMLA/VMLS/VFMA/VFMS/VNMLA 3, VDIV/VSQRT 14, VLDR/VSTR 2, VLDM/VSTM/VPUSH/VPOP 1+N.
* Cortex-M7: ARM DDI 0489F and the Cortex-M7 Software Optimization Guide: dual-issue 6-stage
  pipeline with branch prediction. Simplified model: every instruction 1 cycle except loads 1
  (TCM/cache hit assumed), long multiplies 1, SDIV/UDIV 7, VDIV/VSQRT 14 (single), taken branches 2
  (predicted), not taken 1. Dual issue is NOT credited (the estimate is an upper bound-ish).
* Cortex-M33: ARM 100230 (Cortex-M33 TRM) gives no per-instruction table; its 3-stage pipeline
  is modelled as the Cortex-M4's (single-cycle MUL/MLA and DSP multiplies, LDR 2 with
  pipelining, taken branches 3, SDIV/UDIV 7 assumed). An assumption, labelled so.
* Cortex-M55: ARM 101051 (Cortex-M55 TRM) and its Software Optimization Guide: 4-stage in-order
  pipeline, scalar ALU/MUL 1, loads 1 (TCM), SDIV/UDIV 7 assumed, taken branches 2; Helium (MVE)
  128-bit operations run over two beats: 2 cycles each, loads/stores included (beat overlap of
  neighbouring MVE instructions is NOT credited).
* RISC-V rv32imac: a simple single-issue in-order 5-stage model (not a specific core; close to
  SiFive E31 / Nuclei Bumblebee class): ALU/CSR 1, load 2, store 1, MUL* 2, DIV*/REM* 33,
  taken branch 3 (no prediction credit), not taken 1, JAL 2, JALR/RET 3. rv32ec (CH32V003's
  QingKe V2A class) uses the same table: no multiply or divide instruction exists there.

Loads on Cortex-M3/M4 (ARM DDI 0337I 18.3, DDI 0439B 3.3.2): neighbouring single loads and stores
pipeline their address and data phases, so a load that directly follows another load or store
(the previous instruction in the same basic block) costs 1 cycle instead of 2, unless its address
register is the previous load's destination. LDRD/STRD cost 1 + 2.

Assumptions common to all: zero-wait-state memory (flash wait states and caches are ignored),
no interrupts, no stalls beyond the table. Taken vs not-taken is exact: the QEMU plugin records
when the next executed address is not the one after a block's last instruction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from kan2mcu.firmware.plugin import ExecutedInsn

ESTIMATE_NOTE = ("ESTIMATE: executed instructions (exact, QEMU) x per-instruction costs from the core's "
                 "Technical Reference Manual; zero wait states, no caches; see kan2mcu.firmware.cycles")

# (single cost, taken-branch cost) per instruction class, per core.
_ARM_CONDS = "eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al"
_ARM_BRANCH = re.compile(rf"^(blx|bl|bx|b)({_ARM_CONDS})?$")


@dataclass(frozen=True)
class CostTable:
    """Cycle costs of one core. ``per_register`` classes cost ``base + N`` (N registers moved)."""

    name: str
    costs: dict[str, int]
    branch_taken: int
    branch_not_taken: int
    call: int
    indirect: int
    pop_pc_extra: int
    pipelined_loads: bool = False  # neighbouring LDR/STR pipeline (M3/M4): a following load costs 1


CORTEX_M0 = CostTable("cortex-m0", {
    "alu": 1, "mul": 1, "mul_long": 1, "div": 1, "load": 2, "store": 2, "multi_base": 1,
    "fp": 1, "fp_mac": 1, "fp_div": 1, "fp_mem": 2,
}, branch_taken=3, branch_not_taken=1, call=4, indirect=3, pop_pc_extra=3)
CORTEX_M0PLUS = CostTable("cortex-m0plus", dict(CORTEX_M0.costs), branch_taken=2, branch_not_taken=1,
                          call=3, indirect=2, pop_pc_extra=2)
CORTEX_M3 = CostTable("cortex-m3", {
    "alu": 1, "mul": 1, "mla": 2, "mul_long": 4, "mla_long": 5, "dsp_mul": 1, "div": 7, "load": 2,
    "store": 2, "multi_base": 1, "fp": 1, "fp_mac": 3, "fp_div": 14, "fp_mem": 2,
}, branch_taken=3, branch_not_taken=1, call=3, indirect=3, pop_pc_extra=2, pipelined_loads=True)
CORTEX_M4 = CostTable("cortex-m4", {**CORTEX_M3.costs, "mla": 1, "mul_long": 1, "mla_long": 1, "dsp_mul": 1},
                      branch_taken=3, branch_not_taken=1, call=3, indirect=3, pop_pc_extra=2, pipelined_loads=True)
CORTEX_M7 = CostTable("cortex-m7", {
    "alu": 1, "mul": 1, "mla": 1, "mul_long": 1, "mla_long": 1, "dsp_mul": 1, "div": 7, "load": 1,
    "store": 1, "multi_base": 1, "fp": 1, "fp_mac": 1, "fp_div": 14, "fp_mem": 1,
}, branch_taken=2, branch_not_taken=1, call=2, indirect=2, pop_pc_extra=1)
CORTEX_M33 = CostTable("cortex-m33", dict(CORTEX_M4.costs), branch_taken=3, branch_not_taken=1, call=3,
                       indirect=3, pop_pc_extra=2, pipelined_loads=True)
CORTEX_M55 = CostTable("cortex-m55", {**CORTEX_M7.costs, "mve": 2, "mve_mem": 2},
                       branch_taken=2, branch_not_taken=1, call=2, indirect=2, pop_pc_extra=1)
RV32_INORDER = CostTable("rv32-inorder", {
    "alu": 1, "mul": 2, "div": 33, "load": 2, "store": 1,
}, branch_taken=3, branch_not_taken=1, call=2, indirect=3, pop_pc_extra=0)

COST_TABLES = {
    "cortex-m0": CORTEX_M0, "cortex-m0plus": CORTEX_M0PLUS, "cortex-m3": CORTEX_M3,
    "cortex-m4": CORTEX_M4, "cortex-m7": CORTEX_M7, "cortex-m33": CORTEX_M33, "cortex-m55": CORTEX_M55,
    "rv32imac": RV32_INORDER, "rv32ec": RV32_INORDER,
}
# Helium (MVE) mnemonics: integer-typed vector operations and the vector loads/stores/predication
_MVE_TYPES = re.compile(r"\.(i|u|s)(8|16|32)$")
_MVE_MEM = ("vldrb", "vldrh", "vldrw", "vldrd", "vstrb", "vstrh", "vstrw", "vstrd", "vld2", "vld4", "vst2", "vst4")


def _register_count(operands: str) -> int:
    match = re.search(r"\{([^}]*)\}", operands)
    if not match:
        return 1
    count = 0
    for item in match.group(1).split(","):
        item = item.strip()
        bounds = re.match(r"^[a-z]+(\d+)\s*-\s*[a-z]+(\d+)$", item)
        count += int(bounds.group(2)) - int(bounds.group(1)) + 1 if bounds else (1 if item else 0)
    return max(count, 1)


def split_disassembly(disassembly: str) -> tuple[str, str]:
    """(mnemonic, operands) of a QEMU disassembly line (the RISC-V one starts with the hex word)."""
    tokens = disassembly.split(None, 1)
    if len(tokens) == 2 and re.fullmatch(r"[0-9a-f]{4,8}", tokens[0]):
        tokens = tokens[1].split(None, 1)
    mnemonic = tokens[0].lower() if tokens else "?"
    return mnemonic, tokens[1] if len(tokens) > 1 else ""


def classify_arm(mnemonic: str, operands: str) -> str:
    """Instruction class of a Thumb mnemonic (capstone spelling, e.g. ``ldr.w``, ``bne``, ``vmla.f32``)."""
    base = mnemonic.split(".")[0]
    branch = _ARM_BRANCH.match(base)
    if branch:
        kind, cond = branch.group(1), branch.group(2)
        if kind == "b":
            return "branch_cond" if cond and cond != "al" else "branch"
        return "call" if kind in ("bl", "blx") else "indirect"
    if base in ("cbz", "cbnz"):
        return "branch_cond"
    if base.startswith("v"):
        if base.startswith(_MVE_MEM) and base not in ("vldr", "vstr"):
            return "mve_mem"
        if _MVE_TYPES.search(mnemonic) or base in ("vctp", "vpst", "vpt", "vaddv", "vaddva", "vmovlb", "vmovlt"):
            return "mve"
        if base.startswith(("vldr", "vstr")):
            return "fp_mem"
        if base.startswith(("vldm", "vstm", "vpush", "vpop")):
            return "fp_multi"
        if base.startswith(("vmla", "vmls", "vfma", "vfms", "vnmla", "vnmls", "vfnma", "vfnms")):
            return "fp_mac"
        if base.startswith(("vdiv", "vsqrt")):
            return "fp_div"
        return "fp"
    if base.startswith(("pop", "ldm")):
        return "pop_pc" if re.search(r"\bpc\b", operands) else "multi"
    if base.startswith(("push", "stm")):
        return "multi"
    if base.startswith(("ldrd", "strd")):
        return "load_double"
    if base.startswith("ldr"):
        return "indirect" if re.match(r"^pc\b", operands.strip()) else "load"
    if base.startswith("str"):
        return "store"
    if base.startswith(("sdiv", "udiv")):
        return "div"
    if base.startswith(("umull", "smull")):
        return "mul_long"
    if base.startswith(("umlal", "smlal")) and not base.startswith(("smlalb", "smlalt", "smlald")):
        return "mla_long"
    if base.startswith(("mla", "mls")):
        return "mla"
    if base.startswith("mul"):
        return "mul"
    if base.startswith(("smla", "smul", "smus", "smua", "smls", "smmul", "smmla", "smmls", "smlald", "smlsld")):
        return "dsp_mul"
    if base in ("mov", "movs") and re.match(r"^pc\b", operands.strip()):
        return "indirect"
    return "alu"


_RV_COND_BRANCHES = {"beq", "bne", "blt", "bge", "bltu", "bgeu", "beqz", "bnez", "blez", "bgez", "bltz",
                     "bgtz", "bgt", "ble", "bgtu", "bleu"}


def classify_riscv(mnemonic: str, operands: str) -> str:  # pylint: disable=unused-argument
    """Instruction class of a RISC-V mnemonic (QEMU spelling, compressed forms shown expanded)."""
    base = mnemonic.removeprefix("c.")
    if base in _RV_COND_BRANCHES:
        return "branch_cond"
    if base in ("j", "jal", "call"):
        return "call"
    if base in ("jr", "jalr", "ret", "tail"):
        return "indirect"
    if base in ("lb", "lh", "lw", "lbu", "lhu", "lwsp"):
        return "load"
    if base in ("sb", "sh", "sw", "swsp"):
        return "store"
    if base.startswith("mul"):
        return "mul"
    if base.startswith(("div", "rem")):
        return "div"
    return "alu"


def instruction_cycles(table: CostTable, insn_class: str, operands: str, count: int, taken: int) -> int:
    """Estimated cycles of ``count`` executions (``taken`` of them taken) of one instruction."""
    if insn_class == "branch_cond":
        return (count - taken) * table.branch_not_taken + taken * table.branch_taken
    if insn_class == "branch":
        return count * table.branch_taken
    if insn_class == "call":
        return count * table.call
    if insn_class == "indirect":
        return count * table.indirect
    if insn_class == "load_double":
        return count * (table.costs.get("multi_base", 1) + 2)
    if insn_class in ("multi", "fp_multi"):
        return count * (table.costs.get("multi_base", 1) + _register_count(operands))
    if insn_class == "pop_pc":
        return count * (table.costs.get("multi_base", 1) + _register_count(operands) + table.pop_pc_extra)
    return count * table.costs.get(insn_class, table.costs["alu"])


def estimate_cycles(insns: list[ExecutedInsn], core: str, arch: str) -> dict:
    """Cycle ESTIMATE of executed instructions: total, per instruction class, and the
    taken/not-taken split of conditional branches."""
    table = COST_TABLES[core]
    classify = classify_arm if arch == "arm" else classify_riscv
    total = 0
    by_class: dict[str, dict[str, int]] = {}
    branches = {"conditional_taken": 0, "conditional_not_taken": 0}
    previous = None  # (end address, count, class, destination register) of the last instruction seen
    for insn in sorted(insns, key=lambda i: i.address):
        if insn.count == 0:
            continue
        mnemonic, operands = split_disassembly(insn.disassembly)
        insn_class = classify(mnemonic, operands)
        taken = min(insn.taken, insn.count)
        cycles = instruction_cycles(table, insn_class, operands, insn.count, taken)
        if (table.pipelined_loads and insn_class == "load" and previous is not None
                and previous[0] == insn.address and previous[1] == insn.count
                and previous[2] in ("load", "store") and previous[3] != _address_register(operands)):
            cycles = insn.count * 1  # pipelined behind the previous load/store
            insn_class = "load_pipelined"
        previous = (insn.address + insn.size, insn.count, "load" if insn_class == "load_pipelined" else insn_class,
                    _first_register(operands))
        total += cycles
        entry = by_class.setdefault(insn_class, {"instructions": 0, "cycles": 0})
        entry["instructions"] += insn.count
        entry["cycles"] += cycles
        if insn_class == "branch_cond":
            branches["conditional_taken"] += taken
            branches["conditional_not_taken"] += insn.count - taken
    return {"cycles_estimate": total, "cost_table": table.name, "by_class": by_class,
            "branches": branches, "note": ESTIMATE_NOTE}


def _first_register(operands: str) -> str | None:
    match = re.match(r"\s*([a-z]+\d*)", operands)
    return match.group(1) if match else None


def _address_register(operands: str) -> str | None:
    match = re.search(r"\[\s*([a-z]+\d*)", operands)
    return match.group(1) if match else None


def mnemonic_histogram(insns: list[ExecutedInsn]) -> dict[str, int]:
    """Executed count per mnemonic, most frequent first."""
    histogram: dict[str, int] = {}
    for insn in insns:
        mnemonic, _ = split_disassembly(insn.disassembly)
        histogram[mnemonic] = histogram.get(mnemonic, 0) + insn.count
    return dict(sorted(histogram.items(), key=lambda item: (-item[1], item[0])))
