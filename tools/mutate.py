"""Mutation suite: apply each deliberate bug of tools/mutants.py to a temporary copy of the
repository, one at a time, run the tests named for it, and fail unless every mutant is killed.

    python tools/mutate.py [--fast] [--only NAME ...] [--jobs N]

The working tree is never modified: the tracked and untracked (not ignored) files are copied to a
temporary folder per worker. Before any mutant, every pattern is checked (it must occur exactly
once) and the union of the named tests must pass on the unmutated copy. The tests that need the
default digits KAN read the committed one (host_tests/fixtures/hashed/digits.pt); mutants of the
training code are killed by tests that train their own models. Exit status 0 only when all
mutants were killed.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from mutants import MUTANTS, Mutant  # noqa: E402

TIMEOUT_S = 600
DIGITS_FIXTURE = "host_tests/fixtures/hashed/digits.pt"  # the README's default digits KAN, committed
# Each run of the named tests is a fresh process forked from one server that imported these once
# (about 2 s of start-up per mutant otherwise); kan2mcu itself is imported from each copy.
PRELOAD = ["torch", "numpy", "scipy.interpolate", "sklearn.datasets", "jinja2", "elftools.elf.elffile", "pytest",
           "filelock", "matplotlib"]
FORK_SERVER = multiprocessing.get_context("forkserver")


@dataclass
class Outcome:
    mutant: Mutant
    killed_by: list[str]
    status: str  # "killed", "SURVIVED", "ERROR"
    seconds: float
    detail: str = ""


def repo_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    return [name for name in listed if name and (ROOT / name).is_file()]


def copy_repo(files: list[str], target: Path) -> Path:
    for name in files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    return target


def check_patterns(mutants: list[Mutant]) -> list[str]:
    """One problem line per edit whose old text does not occur exactly once."""
    problems = []
    for mutant in mutants:
        for path, old, _ in mutant.edits:
            file = ROOT / path
            count = file.read_text().count(old) if file.is_file() else 0
            if count != 1:
                problems.append(f"mutant {mutant.name}: {path}: pattern found {count} times (need exactly 1): {old!r}")
    return problems


def _env(copy: Path) -> dict:
    """The environment of the tests in ``copy``: kan2mcu imported from the copy, toolchains
    required, and the committed default digits KAN instead of training one per run."""
    return dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1", KAN2MCU_REQUIRE_TOOLCHAINS="1",
                KAN2MCU_TEST_DIGITS_CHECKPOINT=str(copy / DIGITS_FIXTURE))


def _enter_copy(copy: Path) -> None:
    """In a child forked from the fork server (torch, numpy, pytest ... already imported, kan2mcu
    not): work in ``copy``, with its environment, importing kan2mcu from it."""
    os.chdir(copy)
    os.environ.update(_env(copy))
    sys.path.insert(0, str(copy))


def _pytest_child(copy: Path, arguments: list[str], log: Path) -> None:
    """Run pytest in ``copy`` (a forked child) with its output in ``log``; the exit status is pytest's."""
    _enter_copy(copy)
    with open(log, "wb") as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
    import pytest

    sys.exit(int(pytest.main(arguments)))


def run_tests(copy: Path, tests: list[str], report: Path, options: tuple[str, ...] = ()) -> tuple[int, list[str], str]:
    """Run ``tests`` in ``copy`` (with pytest ``options``) in a child of the fork server; returns
    (pytest exit status, failed test ids, output tail)."""
    arguments = ["-q", "-p", "no:cacheprovider", "-o", "addopts=", f"--junitxml={report}", *options, *tests]
    log = report.with_suffix(".log")
    child = FORK_SERVER.Process(target=_pytest_child, args=(copy, arguments, log))
    child.start()
    child.join(TIMEOUT_S)
    if child.is_alive():
        child.kill()
        child.join()
        return -1, [f"timeout after {TIMEOUT_S} s"], ""
    failed = []
    if report.is_file():
        for case in ET.parse(report).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                test_file = case.get("classname", "").replace(".", "/") + ".py"
                failed.append(f"{Path(test_file).name}::{case.get('name')}")
        report.unlink()
    tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
    return child.exitcode, failed, tail


def _import_check_child(copy: Path) -> None:
    _enter_copy(copy)
    import kan2mcu

    sys.exit(0 if Path(kan2mcu.__file__).resolve().is_relative_to(copy.resolve()) else 1)


def imports_from_copy(copy: Path) -> bool:
    """The tests must import kan2mcu from the copy (not the editable install of the working tree)."""
    child = FORK_SERVER.Process(target=_import_check_child, args=(copy,))
    child.start()
    child.join()
    return child.exitcode == 0


def run_mutant(copy: Path, mutant: Mutant) -> Outcome:
    start = time.monotonic()
    originals = {}
    try:
        for path, old, new in mutant.edits:
            file = copy / path
            originals.setdefault(file, file.read_text())
            text = file.read_text()
            file.write_text(text.replace(old, new, 1))
        # -x: one failing test kills the mutant, the rest need not run
        code, failed, tail = run_tests(copy, list(mutant.tests), copy / "mutant-report.xml", ("-x",))
    finally:
        for file, text in originals.items():
            file.write_text(text)
    seconds = time.monotonic() - start
    if code in (4, 5):  # usage error / no tests collected: the selection itself is broken
        return Outcome(mutant, failed, "ERROR", seconds, tail)
    if failed or code == -1:
        return Outcome(mutant, failed, "killed", seconds)
    if code != 0:  # e.g. a collection error that junit did not record as a test
        return Outcome(mutant, ["(pytest exit status %d)" % code], "killed", seconds, tail)
    return Outcome(mutant, [], "SURVIVED", seconds, tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="only the mutants marked fast (the CI subset)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these mutants")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run in parallel (one repo copy each)")
    args = parser.parse_args(argv)

    mutants = [m for m in MUTANTS if (not args.fast or m.fast) and (not args.only or m.name in args.only)]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown or not mutants:
        print(f"mutants: FAIL: unknown or no mutants selected ({', '.join(sorted(unknown)) or 'none'})")
        return 2
    problems = check_patterns(mutants)
    if problems:
        print("mutants: FAIL: patterns to re-point in tools/mutants.py:\n  " + "\n  ".join(problems))
        return 2
    started = time.monotonic()
    files = repo_files()
    FORK_SERVER.set_forkserver_preload(PRELOAD)
    with tempfile.TemporaryDirectory(prefix="kan2mcu-mutants-") as tmp:
        jobs = max(1, min(args.jobs, len(mutants)))
        copies = [copy_repo(files, Path(tmp) / f"copy{n}") for n in range(jobs)]
        if not imports_from_copy(copies[0]):
            print("mutants: FAIL: the tests would import kan2mcu from outside the temporary copy")
            return 2
        selection = sorted({test for m in mutants for test in m.tests})
        print(f"mutants: baseline: {len(selection)} tests on the unmutated copy", flush=True)
        # the baseline on every worker the mutants will use (pytest-xdist, a file per worker)
        parallel = ("-n", str(jobs), "--dist", "loadfile") if jobs > 1 else ()
        code, failed, tail = run_tests(copies[0], selection, copies[0] / "baseline.xml",
                                       parallel)
        if code != 0:
            print(f"mutants: FAIL: the selected tests do not pass without mutation (exit {code}): {failed}\n{tail}")
            return 1
        print(f"mutants: running {len(mutants)} mutants, {jobs} at a time", flush=True)
        free = list(copies)
        outcomes = []
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            pending = {}
            queue = list(mutants)
            while queue or pending:
                while queue and free:
                    copy = free.pop()
                    mutant = queue.pop(0)
                    pending[pool.submit(run_mutant, copy, mutant)] = copy
                done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    free.append(pending.pop(future))
                    outcome = future.result()
                    outcomes.append(outcome)
                    print(f"  {outcome.status:8s} {outcome.mutant.name} ({outcome.seconds:.0f} s)", flush=True)
    order = {m.name: n for n, m in enumerate(mutants)}
    outcomes.sort(key=lambda o: order[o.mutant.name])
    print("\n| mutant | file | result | killed by |\n|---|---|---|---|")
    for o in outcomes:
        files_changed = ", ".join(sorted({path for path, _, _ in o.mutant.edits}))
        print(f"| {o.mutant.name} | {files_changed} | {o.status} | {'; '.join(o.killed_by) or '-'} |")
    bad = [o for o in outcomes if o.status != "killed"]
    for o in bad:
        print(f"\nmutants: {o.status}: {o.mutant.name} ({o.mutant.why}); tests: {', '.join(o.mutant.tests)}\n{o.detail}")
    print(f"\nmutants: {len(outcomes) - len(bad)}/{len(outcomes)} killed in {time.monotonic() - started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
