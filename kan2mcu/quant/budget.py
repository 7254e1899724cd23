"""One flash budget, counted one way (issue 19, item 2).

A model's flash is its layers' tables (requantization constants included), the C input API's
tables, and the layers' code. The planner's prediction, the plan printed by ``generate``,
report.json's ``totals.model_flash_bytes`` and the budget check all add exactly these parts:

- tables: exact (the bytes the renderer emits; ``kan2mcu measure`` reads them from the ELF as
  ``model_tables``); the planner predicts them with the strategies' cost-model formulas;
- input API: exact, :func:`input_api_bytes` (the one place that computes it);
- code: an estimate, :func:`code_bytes` on the plan's core (the strategies' ``CODE_BYTES`` per
  layer, plus the straight-line asm of small edge-table layers; ``measure``'s ``model_code`` is
  the linked truth; the estimate is what the planner can know before compiling).

Wherever the budget comes from (the default, ``--board``'s flash less a firmware reserve, or
``--flash-budget``), a plan over it is refused, naming the smallest plan and its cost, unless the
caller opts in (``--allow-over-budget``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kan2mcu.errors import OptionError
from kan2mcu.quant.fixedpoint import clamps_caller_codes
from kan2mcu.quant.strategies import get_strategy
from kan2mcu.quant.strategies.edge_table_kernel import codes_test_bytes

DEFAULT_FLASH_BUDGET = 64 * 1024  # no board given: a typical share of a small MCU's flash for a model
FIRMWARE_RESERVE = 32 * 1024  # with --board: flash kept for the firmware around the model
OPT_IN = "--allow-over-budget"


@dataclass(frozen=True)
class Budget:
    """A flash budget in bytes and where it came from (for the messages)."""

    bytes: int
    source: str  # "the default flash budget", "--board NAME's budget", "--flash-budget"

    def describe(self) -> str:
        return f"{self.source} of {self.bytes} bytes"


def flash_budget(board: str | None, budget: int | None) -> Budget:
    """The budget: explicit (never more than the board's whole flash), else the board's flash less
    the firmware reserve, else the default."""
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget <= 0):
        raise OptionError(f"--flash-budget must be a positive number of bytes, got {budget}")
    flash = board_budget = None
    if board is not None:
        from kan2mcu.firmware.boards import get_board  # pylint: disable=import-outside-toplevel

        flash = get_board(board).flash_bytes
        board_budget = max(flash - FIRMWARE_RESERVE, flash // 2)
    if budget is not None:
        if flash is not None and budget > flash:  # a model the board cannot hold is no plan for it
            raise OptionError(f"--flash-budget {budget} is more than --board {board}'s whole flash ({flash} bytes); "
                              f"give at most {flash}, or leave --flash-budget out (the board's budget: "
                              f"{board_budget} bytes)")
        return Budget(int(budget), "--flash-budget")
    if board_budget is not None:
        return Budget(board_budget, f"--board {board}'s flash budget")
    return Budget(DEFAULT_FLASH_BUDGET, "the default flash budget")


@dataclass(frozen=True)
class _FirstLayerView:
    """The input side of a first layer: all the input API depends on."""

    in_scale: np.ndarray
    in_zero: np.ndarray
    act_bits: int
    in_features: int

    @property
    def codes(self) -> int:
        return 1 << self.act_bits


@dataclass(frozen=True)
class _InputView:
    layers: tuple
    options: object = None  # the QuantOptions (the input layout depends on mul_free)

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features


def input_api_bytes(qmodel, input_transform: dict | None) -> int:
    """Flash of the C input API's tables linked with the model: the input codec's own count
    (kan2mcu.quant.input_codec.api_flash_bytes, what the report totals). The one function every
    budget count goes through."""
    from kan2mcu.quant.input_codec import api_flash_bytes  # pylint: disable=import-outside-toplevel

    return int(api_flash_bytes(qmodel, input_transform))


def input_api_bytes_for(encoding: dict, n_inputs: int, input_transform: dict | None, options=None) -> int:
    """:func:`input_api_bytes` of a first layer with input ``encoding`` (from
    kan2mcu.quant.quantize.layer_encoding), before the layer itself is quantized."""
    view = _FirstLayerView(np.asarray(encoding["scale"], np.float64), np.asarray(encoding["zero"], np.float64),
                           int(encoding["bits"]), n_inputs)
    return input_api_bytes(_InputView((view,), options), input_transform)


def code_bytes(qmodel, core: str = "cortex-m4") -> int:
    """Estimated code of the model's layers on ``core`` (the core the plan was costed for), the
    planner's own estimate: one kernel function per layer, plus an edge-table layer's straight-line
    asm where ``core`` runs it (kan2mcu.quant.strategies.edge_table.code_bytes), plus the frame around
    them (frame_code_bytes)."""
    from kan2mcu.quant.strategies import edge_table  # pylint: disable=import-outside-toplevel

    first = qmodel.layers[0]
    total = frame_code_bytes(first.in_features, first.act_bits, first.strategy)
    for layer in qmodel.layers:
        if layer.strategy == "edge-table":
            total += edge_table.code_bytes(layer.in_features, layer.out_features, layer.table_bits, layer.act_bits,
                                           core)
        else:
            total += get_strategy(layer.strategy).CODE_BYTES
    return int(total)


def frame_code_bytes(n_in: int, in_bits: int, first_strategy: str) -> int:
    """Code bytes, about, of ``<prefix>_infer_q`` and of the codes API's test of a first edge-table
    layer's codes (kan2mcu.quant.strategies.edge_table_kernel.codes_test_bytes)."""
    return codes_test_bytes(n_in, in_bits, first_strategy == "edge-table" and clamps_caller_codes(in_bits))


def over_budget_message(budget: Budget, smallest_bytes: int, smallest_plan: str) -> str:
    """The refusal: the budget, the smallest plan and what it would cost, the ways out."""
    return (f"no plan fits {budget.describe()}: the smallest model possible ({smallest_plan}) needs about "
            f"{smallest_bytes} bytes (tables, input API and code); raise the budget, or pass {OPT_IN} to write "
            "it anyway")


def check_written_total(total: int, budget: Budget, allow: bool) -> str | None:
    """After rendering: refuse (OptionError) a model whose counted total exceeds the budget, or,
    with the opt-in, return the warning to print."""
    if total <= budget.bytes:
        return None
    text = (f"the generated model needs {total} bytes (tables, input API and code), over {budget.describe()} "
            f"by {total - budget.bytes} bytes")
    if not allow:
        raise OptionError(f"{text}; raise the budget, lower the bit widths, or pass {OPT_IN} to write it anyway")
    return f"{text}; written anyway ({OPT_IN})"
