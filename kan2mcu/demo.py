"""`kan2mcu demo`: the main job end to end on the embedded default.

Train the default KAN [64, 16, 10] on scikit-learn's digits, quantize, generate C (integer and
float32 back ends), verify both on the host, build firmware and run it under QEMU on the
Cortex-M4, and print the report.
"""
from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_BOARD = "qemu-cortex-m4"


def run_demo(out: Path, *, board: str = DEFAULT_BOARD, retrain: bool = False) -> dict:
    """Run every step into folder ``out``; returns the measurement report."""
    from kan2mcu.generate import generate_model
    from kan2mcu.training.train import train
    from kan2mcu.check.verify import verify

    from kan2mcu.errors import BoardError
    from kan2mcu.firmware.boards import BOARDS, get_board

    if not get_board(board).is_qemu:  # checked first, not after training, generating and verifying
        emulated = ", ".join(name for name, info in BOARDS.items() if info.is_qemu)
        raise BoardError(f"--board {board}: the demo runs under QEMU, pick an emulated board ({emulated}); "
                         f"measure a real board with: kan2mcu measure DIR --board {board} --port PORT")
    out = Path(out)
    checkpoint = out / "digits_kan.pt"
    if retrain or not checkpoint.exists():
        print("== 1/5 train the default KAN [64, 16, 10] on digits", file=sys.stderr)
        result = train(checkpoint)
        print(f"float accuracy: test {result.test_accuracy:.4f}", file=sys.stderr)
    else:
        print(f"== 1/5 reuse {checkpoint} (pass --retrain to train again)", file=sys.stderr)
    print("== 2/5 quantize and generate C (integer: the planner picks each layer's strategy; and float32)",
          file=sys.stderr)
    int_dir, float_dir = out / "kan_int", out / "kan_float"
    generate_model(checkpoint, int_dir, name="kan", arith="int")
    generate_model(checkpoint, float_dir, name="kan", arith="float", quiet=True)
    print("== 3/5 verify on the host", file=sys.stderr)
    verify(int_dir, sanitize=True)
    verify(float_dir)
    print(f"== 4/5 build firmware and run it under QEMU ({board})", file=sys.stderr)
    from kan2mcu.firmware.measure import measure

    report = measure([int_dir, float_dir], board, out / f"measure-{board}")
    print("== 5/5 report", file=sys.stderr)
    import json

    accuracy = json.loads((int_dir / "report.json").read_text())["accuracy"]
    print(report["markdown"])
    print(f"Accuracy on the digits test split ({accuracy['samples']} samples): float model "
          f"{accuracy['float']:.4f}, integer C {accuracy['quantized']:.4f} (bit-exact with the Python reference "
          f"on the host and on {board}).")
    print(f"Files: {out}/ (checkpoint, kan_int/, kan_float/, measure-{board}/measure.json and measure.md)")
    return report


def register(sub) -> dict:
    """Add the ``demo`` subcommand; returns its runner."""
    p = sub.add_parser("demo", help="train, generate, verify, build and measure the default digits KAN")
    p.add_argument("-o", "--output", type=Path, default=Path("out/demo"), help="work folder (default out/demo)")
    p.add_argument("--board", default=DEFAULT_BOARD, help=f"emulated board to measure on (default {DEFAULT_BOARD})")
    p.add_argument("--retrain", action="store_true", help="train again even if the checkpoint exists")

    def run(args) -> int:
        run_demo(args.output, board=args.board, retrain=args.retrain)
        return 0

    return {"demo": run}
