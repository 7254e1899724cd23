"""The sweep's grid: parse ``--act-bits 4,6,8`` / ``--spline-bits 2..8`` and name each point."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from kan2mcu.errors import OptionError

STRATEGIES = ("spline", "edge-table", "auto")
DEFAULT_STRATEGY = "spline"  # what generate_model does without a ``strategy`` argument


def parse_int_list(text: str, option: str) -> list[int]:
    """``"4,6,8"``, ``"2..8"`` or a mix (``"2..4,8"``) -> sorted distinct integers."""
    values: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        try:
            if ".." in part:
                lo, hi = (int(v) for v in part.split("..", 1))
                if lo > hi:
                    raise ValueError
                values.update(range(lo, hi + 1))
            else:
                values.add(int(part))
        except ValueError:
            raise OptionError(f"{option}: expected integers like 4,6,8 or ranges like 2..8, got {text!r}") from None
    return sorted(values)


def parse_name_list(text: str, option: str, known: tuple[str, ...] | None = None) -> list[str]:
    """``"a,b"`` -> distinct names in the given order; checked against ``known`` when given."""
    names = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise OptionError(f"{option}: empty name in {text!r}")
        if known is not None and part not in known:
            raise OptionError(f"{option}: unknown value {part!r} (known: {', '.join(known)})")
        if part not in names:
            names.append(part)
    return names


# Knobs a strategy does not read: its points leave them out (None) instead of repeating one result.
IGNORED_KNOBS = {"edge-table": ("spline_bits", "coef_bits")}  # whole-edge tables: no splines, no coefficients


@dataclass(frozen=True)
class SweepPoint:
    """One setting of the knobs the sweep varies (None: the strategy does not use that knob)."""

    act_bits: int
    spline_bits: int | None
    coef_bits: int | None
    strategy: str

    @property
    def key(self) -> str:
        """Stable file-name-safe name; zero-padded so that sorting by key sorts by the numbers."""
        parts = [f"a{self.act_bits:02d}"]
        if self.spline_bits is not None:
            parts.append(f"s{self.spline_bits:02d}")
        if self.coef_bits is not None:
            parts.append(f"c{self.coef_bits:02d}")
        return "-".join(parts + [self.strategy])

    def as_dict(self) -> dict:
        return {"act_bits": self.act_bits, "spline_bits": self.spline_bits, "coef_bits": self.coef_bits,
                "strategy": self.strategy}


def make_grid(act_bits: list[int], spline_bits: list[int], coef_bits: list[int],
              strategies: list[str]) -> list[SweepPoint]:
    """Every combination of the knobs each strategy reads, sorted by key (the order of every output)."""
    for option, values in (("--act-bits", act_bits), ("--spline-bits", spline_bits), ("--coef-bits", coef_bits)):
        bad = [v for v in values if not 2 <= v <= 8]
        if bad or not values:
            raise OptionError(f"{option}: bit widths must lie in 2..8, got {values}")
    if not strategies:
        raise OptionError("--strategy: give at least one strategy")
    points = set()
    for act, spline, coef, strategy in itertools.product(act_bits, spline_bits, coef_bits, strategies):
        ignored = IGNORED_KNOBS.get(strategy, ())
        points.add(SweepPoint(act, None if "spline_bits" in ignored else spline,
                              None if "coef_bits" in ignored else coef, strategy))
    return sorted(points, key=lambda p: p.key)
