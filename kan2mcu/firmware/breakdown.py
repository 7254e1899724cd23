"""Where one inference's instructions and the model's flash go: input quantization, each layer, output.

Parts are told apart by the generated symbols' names (templates/model_int.c.j2,
templates/model_api_int.c.j2): the raw-input API is ``<prefix>_quantize_input_q`` with its helpers
and ``<prefix>_raw_*`` tables, layer N is the function ``<prefix>_layerN`` (never inlined) with its
``<prefix>_lN_*`` tables and functions (``<prefix>_l0_codes``: the codes API's test of the first layer's codes), and "output" is the rest of the inference (``<prefix>_infer``'s own code,
its other read-only data and the library helpers it calls). Flash counts the read-only symbols'
sizes (code and tables) from the ELF; instructions come from the QEMU trace per function.
"""
from __future__ import annotations

import re

from kan2mcu.firmware.elfinfo import ElfInfo

INPUT_API_FUNCTIONS = ("quantize_input_q", "raw_code", "raw_threshold", "raw_lut_code", "count_le")
INPUT_API_TABLES = ("raw_rules", "raw_luts", "raw_lut_codes", "raw_row", "raw_run_end", "raw_run_row",
                    "raw_thresholds", "raw_top")


def base_name(name: str) -> str:
    """A function's name without GCC's clone suffixes (``kan_layer0.constprop.0`` -> ``kan_layer0``)."""
    return name.split(".", 1)[0]


def _flash_symbols(info: ElfInfo, prefix: str) -> dict[str, int]:
    """Sizes of the model's symbols that live in flash only (functions and read-only objects)."""
    marker = prefix + "_"
    return {s.name: s.size for s in info.symbols
            if s.name.startswith(marker) and (s.kind == "func" or s.section not in info.writable_sections)}


def breakdown(model_counts: dict[str, int], input_counts: dict[str, int], info: ElfInfo, prefix: str) -> list[dict]:
    """[{"part", "instructions", "flash_bytes"}] for input quantization, each layer and output;
    instructions are None without a trace (real boards) or, for input quantization, when the
    firmware did not call the raw-input API."""
    flash: dict[str, int] = {}
    for name, size in _flash_symbols(info, prefix).items():
        flash[base_name(name)] = flash.get(base_name(name), 0) + size
    traced = bool(model_counts)
    input_names = {f"{prefix}_{n}" for n in INPUT_API_FUNCTIONS + INPUT_API_TABLES}
    layer_of = re.compile(rf"^{re.escape(prefix)}_(?:layer(\d+)|l(\d+)_\w+)$")
    layers: dict[int, dict] = {}
    output_flash = 0
    for name, size in flash.items():
        match = layer_of.match(name)
        if name in input_names:
            continue
        if match:
            index = int(match.group(1) or match.group(2))
            layers.setdefault(index, {"instructions": 0, "flash_bytes": 0})["flash_bytes"] += size
        else:
            output_flash += size
    for name, count in model_counts.items():  # layer N's functions: <prefix>_layerN and <prefix>_lN_codes
        match = layer_of.match(base_name(name))
        if match:
            index = int(match.group(1) or match.group(2))
            layers.setdefault(index, {"instructions": 0, "flash_bytes": 0})["instructions"] += count
    in_layers = sum(part["instructions"] for part in layers.values())
    parts = [{"part": "input quantization",
              "instructions": sum(input_counts.values()) if input_counts else None,
              "flash_bytes": sum(size for name, size in flash.items() if name in input_names)}]
    parts += [{"part": f"layer {index}", "instructions": layers[index]["instructions"] if traced else None,
               "flash_bytes": layers[index]["flash_bytes"]} for index in sorted(layers)]
    parts.append({"part": "output", "instructions": sum(model_counts.values()) - in_layers if traced else None,
                  "flash_bytes": output_flash})
    return parts
