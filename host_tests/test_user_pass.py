"""A new user's pass over the command line (session 7): options that would be silently ignored or
fail late are refused first, in one line, before anything is written; help texts say what the
tool is."""
from __future__ import annotations

from conftest import assert_one_error, run_cli


def test_top_level_help_describes_the_tool_not_its_modules():
    """`kan2mcu --help` opens with what the tool does for a user, not the module's docstring
    (which named internal modules in reST markup)."""
    from kan2mcu.cli import build_parser

    text = build_parser().format_help()
    assert "``" not in text and "kan2mcu.firmware" not in text, text
    assert "microcontrollers" in text and "COMMAND --help" in text, text


def test_measure_refuses_a_port_for_an_emulated_board(capsys, generated, tmp_path):
    """--port with a qemu-* board was ignored (the firmware ran under QEMU and the user believed the
    real board measured); now one error, nothing built or written."""
    out = tmp_path / "m"
    status, err = run_cli(capsys, "measure", generated, "--board", "qemu-cortex-m4", "--port", "/dev/ttyACM0",
                          "-o", out)
    assert_one_error(status, err, "--port /dev/ttyACM0", "qemu-cortex-m4 is emulated")
    assert not out.exists()


def test_demo_refuses_a_bad_board_before_training(capsys, tmp_path):
    """An unknown or real board stopped the demo only at step 4, after training, generating and
    verifying; now it stops first, and writes nothing."""
    out = tmp_path / "demo"
    status, err = run_cli(capsys, "demo", "-o", out, "--board", "qemu-cortex-m99")
    assert_one_error(status, err, "unknown board 'qemu-cortex-m99'")
    assert "== 1/5" not in err and not out.exists()
    status, err = run_cli(capsys, "demo", "-o", out, "--board", "pico")
    assert_one_error(status, err, "--board pico", "emulated board", "qemu-cortex-m4")
    assert "== 1/5" not in err and not out.exists()


def test_float_back_end_refuses_integer_options(capsys, small, tmp_path):
    """`generate --arith float --strategy edge-table --act-bits 4` wrote the float32 model and ignored
    both options without a word; now they are named in one error and nothing is written. The float
    back end on its own still generates."""
    checkpoint, calibration = small
    out = tmp_path / "f"
    status, err = run_cli(capsys, "generate", checkpoint, "-o", out, "--calibration", calibration, "--arith", "float",
                          "--strategy", "edge-table", "--act-bits", "4")
    assert_one_error(status, err, "--arith float", "--act-bits, --strategy", "--arith int")
    assert not out.exists()
    for option in (["--board", "qemu-cortex-m0"], ["--flash-budget", "9000"], ["--no-mul"], ["--max-error", "0.01"]):
        status, err = run_cli(capsys, "generate", checkpoint, "-o", out, "--calibration", calibration,
                              "--arith", "float", *option)
        assert_one_error(status, err, "--arith float", option[0])
        assert not out.exists()
    status, err = run_cli(capsys, "generate", checkpoint, "-o", out, "--calibration", calibration, "--arith", "float",
                          "-q")
    assert status == 0, err
    assert (out / "kan.c").exists()


def _printed_bytes(err: str, prefix: str) -> int:
    line = next(line for line in err.splitlines() if line.startswith(prefix))
    return int(line[len(prefix):].split()[0])


def test_model_flash_line_counts_the_code_the_plan_counted(capsys, small, tmp_path):
    """The plan `generate` prints and the model flash it reports (report.json totals, the budget
    check) add the same parts: the code estimate of the written model is the planner's, on the
    plan's core (small edge-table layers' straight-line asm included). It was a flat 240 bytes per
    layer: 'plan: about 11696 bytes' above 'model flash 11320 bytes' for the same model, and for the
    digits KAN 480 B of code reported where the M4 firmware links 4,618 B."""
    import json

    checkpoint, calibration = small
    for board in ([], ["--board", "qemu-rv32imac"], ["--board", "qemu-cortex-m0"]):
        out = tmp_path / f"m{len(board) and board[1]}"
        status, err = run_cli(capsys, "generate", checkpoint, "-o", out, "--calibration", calibration,
                              "--strategy", "edge-table", *board)
        assert status == 0, err
        planned = _printed_bytes(err, "kan2mcu: plan: about ")
        counted = _printed_bytes(err, "kan2mcu: model flash ")
        assert planned == counted, err
        totals = json.loads((out / "report.json").read_text())["totals"]
        assert totals["model_flash_bytes"] == counted
        if board[1:] != ["qemu-cortex-m0"]:  # straight-line asm on M4 and RV32: more than the kernel alone
            assert totals["code_bytes"] > 2 * 240, totals


def test_eval_data_format_error_names_its_own_forms(capsys, small, tmp_path):
    """A wrong --eval-data file listed --data's forms ('--target names the labels .npy'), an option
    generate does not have; now it names --eval-data's FEATURES.npy,LABELS.npy pair."""
    checkpoint, calibration = small
    notes = tmp_path / "rows.txt"
    notes.write_text("1,2,3\n")
    status, err = run_cli(capsys, "generate", checkpoint, "-o", tmp_path / "m", "--calibration", calibration,
                          "--eval-data", notes)
    assert_one_error(status, err, "--eval-data", "unknown format .txt", "FEATURES.npy,LABELS.npy")
    assert "--target" not in err and not (tmp_path / "m").exists()


def test_output_that_is_a_file_is_refused_in_words(capsys, generated, small, tmp_path):
    """-o naming an existing file: build, measure and sweep stopped on a bare OS error ('afile/src: Not a
    directory', export 'File exists'); now each says what is wrong, as generate does, and the file is
    left as it was."""
    checkpoint, _ = small
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for args in (["build", generated, "--board", "qemu-cortex-m4"], ["measure", generated, "--board", "qemu-cortex-m4"],
                 ["export", generated, "--format", "cmake"],
                 ["sweep", checkpoint, "--act-bits", "8", "--strategy", "edge-table", "--board", "none"]):
        status, err = run_cli(capsys, *args, "-o", afile)
        assert_one_error(status, err, f"-o {afile}: is a file, not a folder")
        assert afile.read_text() == "mine\n"


def test_strategy_refuses_the_other_kernels_widths(capsys, small, tmp_path):
    """`--strategy edge-table --coef-bits 3` and `--strategy spline --table-bits 4` wrote a model that
    ignored the width (the report even listed 'coef 3'); now one error names it, nothing is written.
    The same widths with --strategy auto (where the planner weighs both kernels) still generate."""
    checkpoint, calibration = small
    out = tmp_path / "m"
    base = ["generate", checkpoint, "-o", out, "--calibration", calibration, "-q"]
    status, err = run_cli(capsys, *base, "--strategy", "edge-table", "--coef-bits", "3", "--silu-bits", "10")
    assert_one_error(status, err, "--strategy edge-table", "--coef-bits, --silu-bits", "spline layers")
    assert not out.exists()
    status, err = run_cli(capsys, *base, "--strategy", "spline", "--table-bits", "4")
    assert_one_error(status, err, "--strategy spline", "--table-bits", "edge-table layers")
    assert not out.exists()
    status, err = run_cli(capsys, *base, "--coef-bits", "6", "--table-bits", "6", "--max-error", "1")
    assert status == 0, err


def test_train_refuses_hidden_with_widths(capsys, tmp_path):
    """--hidden 8 --widths 30,16,2 trained [30, 16, 2] and dropped --hidden without a word."""
    rows = tmp_path / "t.csv"
    rows.write_text("a,b,y\n" + "".join(f"{i % 7},{i % 5},{i % 2}\n" for i in range(40)))
    status, err = run_cli(capsys, "train", "--data", rows, "--target", "y", "--hidden", "8", "--widths", "2,16,2",
                          "-o", tmp_path / "m.pt", "--epochs", "1", "--no-progress")
    assert_one_error(status, err, "--hidden and --widths")
    assert not (tmp_path / "m.pt").exists()


def _readme_commands():
    """Every `kan2mcu COMMAND ...` line of the README's code blocks and inline code, with its flags."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    found = []
    for match in re.finditer(r"(?:^    |`)kan2mcu ([a-z]+)((?:\\\n|[^`\n#])*)", text, re.M):
        found.append((match.group(1), re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", match.group(2))))
    return found


def test_readme_commands_and_flags_exist():
    """The README's commands and their --flags are the CLI's (a renamed or dropped option fails here,
    not in a user's shell)."""
    from kan2mcu.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # pylint: disable=protected-access
    seen = _readme_commands()
    assert len(seen) > 20
    missing = []
    for command, flags in seen:
        if command == "pio":
            continue  # its arguments are PlatformIO's
        assert command in commands, command
        known = {s for action in commands[command]._actions for s in action.option_strings}  # pylint: disable=protected-access
        missing += [f"kan2mcu {command} {flag}" for flag in flags if flag not in known]
    assert not missing, missing


def test_verify_refuses_calibration_it_would_drop(capsys, digits_checkpoint, tmp_path):
    """`verify DIR --calibration FILE` on a model trained on a named data set compared on that data
    set's test split and dropped FILE without a word (even a file of the wrong width passed)."""
    import numpy as np

    out = tmp_path / "m"
    status, err = run_cli(capsys, "generate", digits_checkpoint, "-o", out, "-q", "--strategy", "edge-table",
                          "--act-bits", "3", "--max-error", "1")
    assert status == 0, err
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((5, 3)))
    status, err = run_cli(capsys, "verify", out, "--calibration", wrong)
    assert_one_error(status, err, "--calibration", "digits data set", "leave --calibration out")
    assert "compiling" not in err


def test_verify_reads_own_data_calibration_as_generate_does(capsys, tmp_path):
    """`verify DIR --calibration rows.csv` on an own-data model: the same raw feature rows generate's
    --calibration takes (header row, columns by name, scaled by the model). verify read them as
    headerless model inputs ('could not convert string ... to float64'); now it checks the same rows
    as the folder's own calibration and prints the same guard figures."""
    import csv
    from pathlib import Path

    import numpy as np

    from kan2mcu.check.verify import verify
    from kan2mcu.codegen.bundle import load_bundle

    checkpoint = Path(__file__).parent / "fixtures" / "hashed" / "cancer.pt"
    out = tmp_path / "m"
    status, err = run_cli(capsys, "generate", checkpoint, "-o", out, "-q", "--strategy", "edge-table",
                          "--act-bits", "4", "--max-error", "1")
    assert status == 0, err
    model, _ = load_bundle(out)
    transform = model.metadata["input_transform"]
    x = np.load(out / "calibration.npy")
    raw = (x - np.asarray(transform["offset"])) / np.asarray(transform["scale"])
    rows = tmp_path / "rows.csv"
    with open(rows, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(reversed(model.metadata["columns"])))  # matched by name, not position
        writer.writerows([[repr(float(v)) for v in reversed(row)] for row in raw])
    own = verify(out, quiet=True)
    given = verify(out, calibration=rows, quiet=True)
    assert given.bit_exact and given.inputs_checked == own.inputs_checked
    assert given.guard["argmax_agreement"] == own.guard["argmax_agreement"]


def test_multiply_free_report_counts_no_multiplies(capsys, small, tmp_path):
    """A --no-mul model has no multiply (threshold compares, shifts in the last layer), yet the report
    counted 32x32 BitOps per output, claimed a 'BitOps reduction vs float32', and listed the switch
    as 'mul free True'. Now: 0 BitOps, no reduction factor, 'multiply-free'."""
    import json

    checkpoint, calibration = small
    out = tmp_path / "m"
    status, err = run_cli(capsys, "generate", checkpoint, "-o", out, "--calibration", calibration, "--no-mul",
                          "--max-error", "1", "-q")
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert [row["bitops"] for row in report["layers"]] == [0, 0]
    assert report["totals"]["bitops"] == 0 and report["totals"]["bitops_reduction"] is None
    assert report["totals"]["bitops_float32"] > 0
    text = (out / "report.md").read_text()
    assert "table 8 bits, multiply-free" in text and "True" not in text
    assert "BitOps: none (multiply-free" in text and "reduction" not in text


def test_flash_budget_beyond_the_boards_flash_is_refused(capsys, small, tmp_path):
    """`--board qemu-rv32ec --flash-budget 100000` wrote a 47.7 KB digits model for a 16 KiB board
    without a word (measure failed later: 'does not fit'); now the budget is refused first. A budget
    within the board's flash still plans."""
    checkpoint, calibration = small
    out = tmp_path / "m"
    base = ["generate", checkpoint, "-o", out, "--calibration", calibration, "--board", "qemu-rv32ec", "-q"]
    status, err = run_cli(capsys, *base, "--flash-budget", "100000")
    assert_one_error(status, err, "--flash-budget 100000", "qemu-rv32ec's whole flash (16384 bytes)")
    assert not out.exists()
    status, err = run_cli(capsys, *base, "--flash-budget", "16384", "--max-error", "1")
    assert status == 0, err


def test_export_keeps_files_it_did_not_write(capsys, generated, tmp_path):
    """Export replaces OUT/<format>/<name>/ whole; it deleted a user's own file there without a word.
    Now it refuses, naming the file, and leaves everything as it was; re-exporting over its own
    output (and PlatformIO's .pio build folder) still works."""
    out = tmp_path / "lib"
    assert run_cli(capsys, "export", generated, "--format", "cmake", "-o", out)[0] == 0
    library = out / "cmake" / "kan"
    (library / "examples" / ".pio" / "build").mkdir(parents=True)
    (library / "examples" / ".pio" / "build" / "firmware.elf").write_bytes(b"elf")
    status, err = run_cli(capsys, "export", generated, "--format", "cmake", "-o", out)
    assert status == 0, err
    (library / "src" / "my_port.c").write_text("/* mine */\n")
    status, err = run_cli(capsys, "export", generated, "--format", "cmake,arduino", "-o", out)
    assert_one_error(status, err, "src/my_port.c", "export does not write")
    assert (library / "src" / "my_port.c").read_text() == "/* mine */\n"
    assert not (out / "arduino").exists()


def test_build_does_not_overwrite_a_users_project(capsys, generated, tmp_path):
    """`build -o DIR` into the user's own PlatformIO project overwrote their platformio.ini and
    src/main.c without a word; now a non-empty folder without kan2mcu_project.json is refused and
    left as it was. Rebuilding into a project kan2mcu wrote still works."""
    mine = tmp_path / "mine"
    (mine / "src").mkdir(parents=True)
    (mine / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    status, err = run_cli(capsys, "build", generated, "--board", "pico", "-o", mine)
    assert_one_error(status, err, f"-o {mine}", "not a project kan2mcu wrote", "src/main.c")
    assert (mine / "src" / "main.c").read_text() == "int main(void) { return 0; }\n"
    assert sorted(p.name for p in mine.rglob("*")) == ["main.c", "src"]
    ours = tmp_path / "ours"
    for _ in range(2):
        status, err = run_cli(capsys, "build", generated, "--board", "pico", "-o", ours)
        assert status == 0, err


def test_measure_checks_every_folder_before_building(capsys, generated, tmp_path):
    """`measure GOOD MISSING` built and ran GOOD (and wrote its project) before failing on MISSING;
    now every folder is checked first and nothing is built or written."""
    out = tmp_path / "m"
    status, err = run_cli(capsys, "measure", generated, tmp_path / "missing", "--board", "qemu-cortex-m4", "-o", out)
    assert_one_error(status, err, "missing is not a kan2mcu model folder")
    assert "building" not in err and not out.exists()


def test_multiply_free_plans_refuse_spline_widths(capsys, small, tmp_path):
    """A multiply-free model (--no-mul, or a board without a multiplier) has edge-table layers only:
    `--board qemu-rv32ec --coef-bits 3` ignored the width without a word; now it is refused."""
    checkpoint, calibration = small
    out = tmp_path / "m"
    base = ["generate", checkpoint, "-o", out, "--calibration", calibration, "-q"]
    status, err = run_cli(capsys, *base, "--board", "qemu-rv32ec", "--coef-bits", "3")
    assert_one_error(status, err, "--board qemu-rv32ec (no multiplier)", "--coef-bits", "spline layers")
    status, err = run_cli(capsys, *base, "--no-mul", "--spline-bits", "3")
    assert_one_error(status, err, "--no-mul", "--spline-bits")
    assert not out.exists()
    status, err = run_cli(capsys, *base, "--no-mul", "--table-bits", "6", "--max-error", "1")
    assert status == 0, err
