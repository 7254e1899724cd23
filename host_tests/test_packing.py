"""Bit packing round-trips at every width, signed and unsigned, and rejects values that do not fit."""
from __future__ import annotations

import numpy as np
import pytest

from kan2mcu.packing import pack, unpack


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
