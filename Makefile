# kan2mcu: set-up, the end-to-end demo and the tests. Each target installs what it needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := gcc-arm-none-eabi gcc-riscv64-unknown-elf qemu-system-arm qemu-system-misc cmake clang
# torch 2.13.0 first (a CPU build lies on disk for it); the package's "torch>=2.1" then adds nothing.
TORCH := torch==2.13.0

.PHONY: all setup toolchains venv demo test sweep mutants mutants-fast clean

all: test

toolchains:
	@if command -v arm-none-eabi-gcc >/dev/null && command -v riscv64-unknown-elf-gcc >/dev/null \
	    && command -v qemu-system-arm >/dev/null && command -v qemu-system-riscv32 >/dev/null \
	    && command -v gcc >/dev/null && command -v cmake >/dev/null && command -v clang >/dev/null; then echo "toolchains: present"; \
	else $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends gcc $(APT_PACKAGES); fi

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,pykan,plots,ray]"
	@touch $@

venv: $(VENV)/.installed

setup: toolchains venv

## The main job on the embedded default: train the digits KAN, quantize, generate C, verify on the
## host, build firmware, run it under QEMU (Cortex-M4) and print the report.
demo: setup
	$(VENV)/bin/kan2mcu demo -o out/demo

## The design-space sweep of issue 9 on the default digits KAN: 3 act x 4 table x 3 coef widths x the
## strategies, each point generated, verified bit for bit and measured under QEMU (out/sweep/sweep.md).
SWEEP_STRATEGIES ?= spline,edge-table
SWEEP_BOARDS ?= qemu-cortex-m4
SWEEP_JOBS ?= 2
sweep: setup
	@test -f out/demo/digits_kan.pt || $(VENV)/bin/kan2mcu train -o out/demo/digits_kan.pt
	$(VENV)/bin/kan2mcu sweep out/demo/digits_kan.pt -o out/sweep --act-bits 4,6,8 --spline-bits 2,3,4,8 \
	    --coef-bits 3,4,8 --strategy $(SWEEP_STRATEGIES) --board $(SWEEP_BOARDS) --jobs $(SWEEP_JOBS)
	@$(PY) -c "import json; t = json.load(open('out/sweep/timings.json')); \
	    print(f\"sweep: {t['computed']} points computed in {t['wall_seconds']:.0f} s, {t['reused']} reused\")"

## The tests, one pytest-xdist worker per core (toolchain tests are forced on when CI=true).
test: setup
	$(PY) -m pytest host_tests -q -p no:cacheprovider -n auto --dist loadfile

## The mutation suite: deliberate bugs (tools/mutants.py) applied one at a time to a temporary copy
## of the repository; fails unless the tests named for each one fail. mutants-fast: the quick subset.
mutants: setup
	$(PY) tools/mutate.py

mutants-fast: setup
	$(PY) tools/mutate.py --fast

clean:
	rm -rf out build .pytest_cache
