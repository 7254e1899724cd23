"""The sweep's PNG figures (matplotlib, Agg backend, no dates in the files)."""
from __future__ import annotations

from pathlib import Path

from kan2mcu.plots import PNG_METADATA, pyplot

STRATEGY_MARKERS = {"spline": "o", "edge-table": "s", "auto": "^"}


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=100, metadata=PNG_METADATA)  # no version or date: same sweep, same bytes
    pyplot().close(fig)


def pareto_figure(rows: list[dict], cost: str, front: list[str], metric: str, title: str, path: Path) -> None:
    """Every ok point (marker by strategy), the front joined by a step line."""
    plt = pyplot()
    ok = [r for r in rows if r["status"] == "ok" and r.get(cost) is not None and r.get(metric) is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy in sorted({r["strategy"] for r in ok}):
        pts = [r for r in ok if r["strategy"] == strategy]
        ax.scatter([r[cost] for r in pts], [r[metric] for r in pts], marker=STRATEGY_MARKERS.get(strategy, "x"),
                   alpha=0.55, label=strategy)
    by_key = {r["key"]: r for r in ok}
    chosen = [by_key[k] for k in front if k in by_key]
    if chosen:
        ax.step([r[cost] for r in chosen], [r[metric] for r in chosen], where="post", color="black", lw=1.2,
                label="Pareto front")
        for r in chosen:
            ax.annotate(_label(r), (r[cost], r[metric]), fontsize=7,
                        xytext=(3, -9), textcoords="offset points")
    costs = [r[cost] for r in ok if r[cost] > 0]
    if costs and max(costs) > 20 * min(costs):  # edge tables can be 100x the spline flash
        ax.set_xscale("log")
    ax.set_xlabel(cost.replace("_", " "))
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title + "  (labels: act/spline/coef bits)", fontsize=9)
    ax.grid(alpha=0.3)
    if ok:
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _label(row: dict) -> str:
    if row["spline_bits"] is None:
        return f"{row['act_bits']}/{row['strategy']}"
    return f"{row['act_bits']}/{row['spline_bits']}/{row['coef_bits']}"


def table_bits_figure(rows: list[dict], metric: str, path: Path) -> None:
    """The paper's figure: quality against B-spline table bits, one line per coefficient width,
    one panel per activation width (strategy spline, or the first strategy in the grid)."""
    plt = pyplot()
    ok = [r for r in rows if r["status"] == "ok" and r.get(metric) is not None and r["spline_bits"] is not None]
    strategies = sorted({r["strategy"] for r in ok})
    strategy = "spline" if "spline" in strategies else (strategies[0] if strategies else "spline")
    ok = [r for r in ok if r["strategy"] == strategy]
    acts = sorted({r["act_bits"] for r in ok}) or [8]
    fig, axes = plt.subplots(1, len(acts), figsize=(4 * len(acts), 3.8), sharey=True, squeeze=False)
    float_value = next((r["float_accuracy"] for r in ok if r.get("float_accuracy") is not None), None)
    for ax, act in zip(axes[0], acts):
        for coef in sorted({r["coef_bits"] for r in ok if r["act_bits"] == act}):
            pts = sorted((r for r in ok if r["act_bits"] == act and r["coef_bits"] == coef),
                         key=lambda r: r["spline_bits"])
            ax.plot([r["spline_bits"] for r in pts], [r[metric] for r in pts], marker="o", label=f"coef {coef} bits")
        if metric == "accuracy" and float_value is not None:
            ax.axhline(float_value, color="gray", ls="--", lw=1, label="float32")
        ax.set_title(f"{act}-bit activations ({strategy})", fontsize=9)
        ax.set_xlabel("B-spline table bits")
        ax.grid(alpha=0.3)
        if ok:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no point with spline tables in this sweep", ha="center", va="center",
                    transform=ax.transAxes)
    axes[0][0].set_ylabel(metric.replace("_", " "))
    fig.tight_layout()
    _save(fig, path)


def write_figures(out: Path, rows: list[dict], fronts: dict, boards: list[str], metric: str) -> list[str]:
    """Write every figure into ``out``; returns their file names."""
    names = []
    specs = [("pareto_flash.png", "flash_bytes", "Accuracy vs model flash")]
    specs += [(f"pareto_instructions_{b}.png", f"instructions_{b}", f"Accuracy vs instructions on {b}") for b in boards]
    for name, cost, title in specs:
        pareto_figure(rows, cost, fronts[cost], metric, title, out / name)
        names.append(name)
    table_bits_figure(rows, metric, out / "accuracy_vs_table_bits.png")
    names.append("accuracy_vs_table_bits.png")
    return names
