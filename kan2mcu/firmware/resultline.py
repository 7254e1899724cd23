"""The firmware's one machine-readable result line::

    KAN2MCU_RESULT {"format":1,"model":"kan","arith":"int","check":"PASS","vectors":8,"outputs":10,
                    "status":0,"mismatches":0,"first_mismatch":null,"counter":"none","cycles":null,
                    "stack_bytes":140}

``first_mismatch`` is ``{"vector","index","actual","expected"}``; float models give actual and
expected as IEEE-754 binary32 bit patterns ("0x3f800000"), decoded here into ``actual_value`` /
``expected_value``. ``cycles`` is the board's cycle counter over one inference (null without one).
"""
from __future__ import annotations

import json
import struct

from kan2mcu.errors import VerificationError

RESULT_TAG = "KAN2MCU_RESULT "
FAULT_TAG = "KAN2MCU_FAULT"


def _bits_to_float(text: str) -> float:
    return struct.unpack("<f", struct.pack("<I", int(text, 16)))[0]


def parse_result_line(text: str) -> dict | None:
    """The last result line in ``text`` as a dict, or None when there is none."""
    found = None
    for line in text.splitlines():
        position = line.find(RESULT_TAG)
        if position >= 0:
            payload = line[position + len(RESULT_TAG):].strip()
            try:
                found = json.loads(payload)
            except ValueError as exc:
                raise VerificationError(f"garbled firmware result line: {payload[:120]}") from exc
    if found is None:
        return None
    mismatch = found.get("first_mismatch")
    if isinstance(mismatch, dict):
        for key in ("actual", "expected"):
            if isinstance(mismatch.get(key), str):
                mismatch[key + "_value"] = _bits_to_float(mismatch[key])
    return found
