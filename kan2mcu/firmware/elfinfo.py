"""Flash and RAM use of a linked firmware ELF (pyelftools), split by the symbol prefix rule.

Totals follow ``size -B`` (Berkeley): *text* = allocated read-only sections (vectors, code,
constants), *data* = allocated writable sections with contents, *bss* = allocated sections without
contents. ``flash_bytes = text + data`` (the .data initialisers live in flash) and
``ram_bytes = data + bss`` (static RAM; the stack is reported separately by the firmware).

Split (docs/model-dir.md): symbols starting with ``<prefix>_`` are the model's. Functions are
"model code", objects in read-only sections "model tables", objects in writable sections "model
RAM" (their initialisers, if any, also count as flash). Everything else is "rest" (start-up,
self-check harness, test vectors, libgcc helpers, alignment padding).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile


@dataclass(frozen=True)
class Symbol:
    name: str
    address: int
    size: int
    kind: str  # "func" or "object"
    section: str


@dataclass
class ElfInfo:
    """Sizes and symbols of one ELF."""

    path: Path
    text: int
    data: int
    bss: int
    symbols: list[Symbol] = field(default_factory=list)
    writable_sections: set[str] = field(default_factory=set)
    data_sections: set[str] = field(default_factory=set)

    @property
    def flash_bytes(self) -> int:
        return self.text + self.data

    @property
    def ram_bytes(self) -> int:
        return self.data + self.bss

    def symbol(self, name: str) -> Symbol | None:
        for symbol in self.symbols:
            if symbol.name == name:
                return symbol
        return None

    def functions(self) -> "FunctionMap":
        return FunctionMap([s for s in self.symbols if s.kind == "func"])

    def memory_split(self, prefix: str) -> dict:
        """Flash/RAM split into model code, model tables, model RAM and rest (bytes)."""
        marker = prefix + "_"
        writable = self.writable_sections
        code = sum(s.size for s in self.symbols if s.kind == "func" and s.name.startswith(marker))
        tables = sum(s.size for s in self.symbols
                     if s.kind == "object" and s.name.startswith(marker) and s.section not in writable)
        model_ram = sum(s.size for s in self.symbols
                        if s.kind == "object" and s.name.startswith(marker) and s.section in writable)
        model_data = sum(s.size for s in self.symbols
                         if s.kind == "object" and s.name.startswith(marker) and s.section in self.data_sections)
        return {
            "flash": {"model_code": code, "model_tables": tables, "model_data_init": model_data,
                      "rest": self.flash_bytes - code - tables - model_data, "total": self.flash_bytes},
            "ram": {"model_ram": model_ram, "rest": self.ram_bytes - model_ram, "total": self.ram_bytes},
        }



class FunctionMap:
    """Address -> function name, from the ELF's function symbols (Thumb bit cleared)."""

    def __init__(self, functions: list[Symbol]):
        ordered = sorted(functions, key=lambda s: s.address)
        self._starts = [s.address for s in ordered]
        self._functions = ordered

    def name_at(self, address: int) -> str:
        index = bisect.bisect_right(self._starts, address) - 1
        if index >= 0:
            function = self._functions[index]
            if address < function.address + max(function.size, 1):
                return function.name
        return "?"


def read_elf(path: Path) -> ElfInfo:
    """Sizes and symbols of the ELF at ``path``."""
    path = Path(path)
    with path.open("rb") as handle:
        elf = ELFFile(handle)
        text = data = bss = 0
        writable, data_sections, section_names = set(), set(), {}
        for index, section in enumerate(elf.iter_sections()):
            section_names[index] = section.name
            flags = section["sh_flags"]
            if not flags & SH_FLAGS.SHF_ALLOC:
                continue
            size = section["sh_size"]
            if flags & SH_FLAGS.SHF_WRITE:
                writable.add(section.name)
                if section["sh_type"] == "SHT_NOBITS":
                    bss += size
                else:
                    data += size
                    data_sections.add(section.name)
            else:
                text += size
        symbols = []
        symtab = elf.get_section_by_name(".symtab")
        is_arm = elf["e_machine"] == "EM_ARM"
        for sym in symtab.iter_symbols() if symtab is not None else []:
            kind = {"STT_FUNC": "func", "STT_OBJECT": "object"}.get(sym["st_info"]["type"])
            shndx = sym["st_shndx"]
            if kind is None or not isinstance(shndx, int) or not sym.name:
                continue
            address = sym["st_value"] & ~1 if (is_arm and kind == "func") else sym["st_value"]
            symbols.append(Symbol(sym.name, address, sym["st_size"], kind, section_names.get(shndx, "")))
    return ElfInfo(path, text, data, bss, symbols, writable, data_sections)
