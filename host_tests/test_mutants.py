"""The mutation suite's own data (tools/mutants.py): patterns still point at real code, and the
runner refuses a pattern that moved. (The mutants themselves run with ``make mutants``.)"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import mutate  # noqa: E402
from mutants import MUTANTS, Mutant  # noqa: E402


def test_every_pattern_occurs_exactly_once():
    """After a refactoring, this names each mutant whose pattern must be re-pointed."""
    assert mutate.check_patterns(list(MUTANTS)) == []


def test_the_suite_covers_the_required_bugs():
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)) and len(names) >= 12
    assert {"requant-rounding-dropped", "cardinal-table-one-position-off", "report-flash-bytes-wrong",
            "float-api-syntax-error", "smlad-rotation-wrong", "packing-bit-order-flipped"} <= set(names)
    for mutant in MUTANTS:
        assert mutant.tests and mutant.edits and mutant.why
        for test in mutant.tests:
            assert (ROOT / test.split("::")[0]).is_file(), test
        for path, old, new in mutant.edits:
            assert old != new, mutant.name


def test_a_moved_pattern_fails_naming_the_mutant():
    moved = Mutant("moved", "test", (("kan2mcu/quant/quantize.py", "no such text in quantize.py", "x"),), ("t",))
    problems = mutate.check_patterns([moved])
    assert len(problems) == 1 and "mutant moved: kan2mcu/quant/quantize.py: pattern found 0 times" in problems[0]
    assert mutate.main(["--only", "no-such-mutant"]) == 2
