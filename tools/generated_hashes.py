"""Hash the files `kan2mcu generate` writes for the README's configurations, to prove a change
leaves generated models byte-identical (or to list exactly which files it changes).

    python tools/generated_hashes.py            # compare with host_tests/fixtures/generated_hashes.json
    python tools/generated_hashes.py --update   # rewrite that file (commit it with the change that moved it)

The checkpoints are committed fixtures (host_tests/fixtures/hashed/), so the figures do not depend on
training being bit-reproducible across machines.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "host_tests" / "fixtures" / "hashed"
GOLDEN = ROOT / "host_tests" / "fixtures" / "generated_hashes.json"

# name -> (checkpoint, generate arguments); the README's configurations.
CONFIGS = {
    "auto": ("digits.pt", []),
    "spline-4-3-4": ("digits.pt", ["--strategy", "spline", "--act-bits", "4", "--spline-bits", "3", "--coef-bits", "4"]),
    "spline-8-8-8-rv32": ("digits.pt", ["--strategy", "spline", "--act-bits", "8", "--spline-bits", "8", "--coef-bits", "8",
                                        "--board", "qemu-rv32imac"]),  # the pair coefficient layout
    "edge-table-wide": ("digits.pt", ["--strategy", "edge-table", "--act-bits", "10", "--table-bits", "12",
                                      "--max-error", "0.002"]),
    "float": ("digits.pt", ["--arith", "float"]),
    "efficient-kan-update-grid": ("ek_update_grid.pt", ["--calibration", str(FIXTURES / "ek_calibration.npy")]),
    "own-data": ("cancer.pt", []),
    # the RV32 asm rows' layouts: byte entries in byte-lane groups (5/6 + 6/7), nibble rows (3/4 layer 0)
    "board-rv32imac": ("digits.pt", ["--board", "qemu-rv32imac"]),
    "board-rv32ec": ("digits.pt", ["--board", "qemu-rv32ec"]),
}


def generate_config(name: str, out: Path) -> dict[str, str]:
    """Generate configuration ``name`` into ``out``; sha256 of every file written."""
    from kan2mcu import cli  # pylint: disable=import-outside-toplevel

    checkpoint, args = CONFIGS[name]
    status = cli.main(["generate", str(FIXTURES / checkpoint), "-o", str(out), "--quiet", *args])
    if status != 0:
        raise RuntimeError(f"generate {name} exited {status}")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir()) if p.is_file()}


def generate_all(names=None) -> dict[str, dict[str, str]]:
    """Hashes of every configuration (or of ``names``)."""
    with tempfile.TemporaryDirectory() as tmp:
        return {name: generate_config(name, Path(tmp) / name) for name in (names or CONFIGS)}


def differences(golden: dict, current: dict) -> list[str]:
    """Lines naming each configuration/file whose bytes differ, appeared or disappeared."""
    out = []
    for name in sorted(set(golden) | set(current)):
        old, new = golden.get(name, {}), current.get(name, {})
        for fname in sorted(set(old) | set(new)):
            if old.get(fname) != new.get(fname):
                state = "new" if fname not in old else "gone" if fname not in new else "changed"
                out.append(f"{name}/{fname}: {state}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the golden hashes")
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="configurations to check")
    args = parser.parse_args(argv)
    current = generate_all(args.only)
    if args.update:
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        golden.update(current)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN.relative_to(ROOT)} ({len(current)} configurations)")
        return 0
    golden = json.loads(GOLDEN.read_text())
    diff = differences({k: golden.get(k, {}) for k in current}, current)
    print("\n".join(diff) if diff else f"byte-identical: {', '.join(current)}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
