"""Generated files stay byte-identical for the README's configurations (tools/generated_hashes.py):
a restructuring must not move a byte; a change that does updates the golden hashes in its own commit."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import generated_hashes  # noqa: E402


def test_differences_names_changed_new_and_gone_files():
    golden = {"a": {"x.c": "1", "y.h": "2"}}
    current = {"a": {"x.c": "1", "y.h": "3", "z.json": "4"}, "b": {"w": "5"}}
    assert generated_hashes.differences(golden, current) == ["a/y.h: changed", "a/z.json: new", "b/w: new"]
    assert generated_hashes.differences(current, golden)[-1] == "b/w: gone"


@pytest.mark.parametrize("name", sorted(generated_hashes.CONFIGS))
def test_generated_files_match_the_golden_hashes(name):
    golden = json.loads(generated_hashes.GOLDEN.read_text())
    current = generated_hashes.generate_all([name])
    assert generated_hashes.differences({name: golden.get(name, {})}, current) == []
