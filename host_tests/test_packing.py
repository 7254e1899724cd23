"""Bit packing round-trips at every width, signed and unsigned, and rejects values that do not fit."""
from __future__ import annotations

import numpy as np
import pytest

from kan2mcu.quant.packing import pack, unpack
from kan2mcu.quant.quantize import QuantOptions


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_round_trip(bits, signed):
    rng = np.random.default_rng(bits)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = rng.integers(low, high + 1, size=1001)
    values[:2] = (low, high)
    table = pack(values, bits, signed)
    np.testing.assert_array_equal(unpack(table), values)
    expected_bytes = 1001 if bits == 8 else (1001 * bits + 7) // 8 + 1
    assert table.nbytes == expected_bytes


def test_out_of_range_values_are_refused():
    with pytest.raises(ValueError):
        pack(np.array([0, 8]), 3, signed=False)
    with pytest.raises(ValueError):
        pack(np.array([-5]), 3, signed=True)


# Hand-computed layouts (docs/arithmetic.md section 5): element n in bits n*b .. n*b+b-1 of a
# little-endian bit stream, two's complement in its field, one guard byte after the data.
GOLDEN = [
    # 3-bit unsigned 1,2,3,4,5 -> bit stream 100 010 110 001 101 (LSB first)
    #   byte 0 = bits 0..7  = 1,0,0,0,1,0,1,1 = 0xD1; byte 1 = bits 8..15 = 0,0,0,1,1,0,1,0 = 0x58
    pytest.param([1, 2, 3, 4, 5], 3, False, [0xD1, 0x58, 0x00], id="3bit-unsigned"),
    # 4-bit signed -1,7,-8,0,3 -> fields F,7,8,0,3 -> low nibble first: 0x7F, 0x08, 0x03
    pytest.param([-1, 7, -8, 0, 3], 4, True, [0x7F, 0x08, 0x03, 0x00], id="4bit-signed"),
    # 2-bit unsigned 3,0,1,2,1 -> 3 | 0<<2 | 1<<4 | 2<<6 = 0x93, then 0x01
    pytest.param([3, 0, 1, 2, 1], 2, False, [0x93, 0x01, 0x00], id="2bit-unsigned"),
    # 5-bit signed -16,15,1 -> fields 10000, 01111, 00001: byte 0 = 0,0,0,0,1,1,1,1 = 0xF0,
    #   byte 1 = 1,0,1,0,0,0,0,0 = 0x05 (15 bits: two bytes + guard)
    pytest.param([-16, 15, 1], 5, True, [0xF0, 0x05, 0x00], id="5bit-signed"),
    # 7-bit unsigned 0x55,0x7F -> byte 0 = 0x55 | (1 << 7) = 0xD5, byte 1 = 0x7F >> 1 = 0x3F
    pytest.param([0x55, 0x7F], 7, False, [0xD5, 0x3F, 0x00], id="7bit-unsigned"),
    # 6-bit signed -32,31,-1,0 -> fields 100000,011111,111111,000000 -> 0xE0, 0xF7, 0x03
    pytest.param([-32, 31, -1, 0], 6, True, [0xE0, 0xF7, 0x03, 0x00], id="6bit-signed"),
    # 8 bits: plain int8_t / uint8_t values, no guard byte
    pytest.param([-128, 127, -1, 0], 8, True, [-128, 127, -1, 0], id="8bit-signed"),
    pytest.param([255, 0, 17], 8, False, [255, 0, 17], id="8bit-unsigned"),
]


@pytest.mark.parametrize("values,bits,signed,expected", GOLDEN)
def test_golden_bytes(values, bits, signed, expected):
    table = pack(np.array(values), bits, signed)
    assert list(table.data) == expected
    assert (table.count, table.bits, table.signed) == (len(values), bits, signed)


@pytest.mark.parametrize("values,bits,signed,expected", GOLDEN)
def test_unpack_golden_bytes(values, bits, signed, expected):
    from kan2mcu.quant.packing import PackedTable

    np.testing.assert_array_equal(unpack(PackedTable(tuple(expected), len(values), bits, signed)), values)


def test_generated_c_reader_decodes_golden_bytes(small_checkpoints, tmp_path):
    """The field readers of a generated model read the hand-computed bytes back to their values."""
    import ctypes
    import re
    import subprocess

    from kan2mcu.generate import generate_model
    from kan2mcu.check.hostcc import STRICT_FLAGS, host_compiler

    checkpoint, calibration = small_checkpoints["8x5x3-G5-k3"]
    generate_model(checkpoint, tmp_path / "m", options=QuantOptions(spline_bits=3, coef_bits=4),
                   calibration=calibration, quiet=True, strategy="spline")
    source = (tmp_path / "m" / "kan.c").read_text()
    readers = re.search(r"static inline uint32_t kan_field\(.*?\n}\n", source, flags=re.S)
    assert readers, "field readers not found in the generated C"
    packed = [(values, bits, signed, expected) for values, bits, signed, expected in
              (p.values for p in GOLDEN) if bits < 8]
    arrays = "\n".join(f"static const uint8_t table{n}[] = {{{', '.join(map(str, expected))}}};"
                       for n, (_, _, _, expected) in enumerate(packed))
    # signed fields: the two's-complement value of the field (sign bit flipped, then subtracted)
    cases = "\n".join(f"    case {n}: return (int32_t)(kan_field(table{n}, index, {bits}u) ^ {1 << (bits - 1)}u) - {1 << (bits - 1)};"
                      if signed else f"    case {n}: return (int32_t)kan_field(table{n}, index, {bits}u);"
                      for n, (_, bits, signed, _) in enumerate(packed))
    program = tmp_path / "reader.c"
    program.write_text(f"#include <stdint.h>\n{readers.group(0)}\n{arrays}\n"
                       f"int32_t read_field(uint32_t table, uint32_t index);\n"
                       f"int32_t read_field(uint32_t table, uint32_t index)\n{{\n    switch (table) {{\n{cases}\n"
                       f"    default: return -999;\n    }}\n}}\n")
    library = tmp_path / "reader.so"
    subprocess.run([host_compiler(), *STRICT_FLAGS, "-fPIC", "-shared", str(program), "-o", str(library)], check=True)
    read_field = ctypes.CDLL(str(library)).read_field
    read_field.argtypes, read_field.restype = [ctypes.c_uint32, ctypes.c_uint32], ctypes.c_int32
    for n, (values, _, _, _) in enumerate(packed):
        assert [read_field(n, i) for i in range(len(values))] == values
