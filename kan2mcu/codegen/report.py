"""The per-layer cost report of a generated model (keys documented in docs/report-keys.md)."""
from __future__ import annotations

from kan2mcu.quant import coverage, guard
from kan2mcu.quant.planner import larger_plan_line, layer_line
from kan2mcu.model.ir import KANModel
from kan2mcu.quant.quantize import QuantModel
from kan2mcu.codegen.render import RenderedModel

FLOAT_BITS = 32


def _cox_de_boor_multiplies(n_knots: int, order: int) -> int:
    """Multiplies and divisions of one Cox-de Boor evaluation (4 per term of the recursion)."""
    return sum(4 * (n_knots - 1 - p) for p in range(1, order + 1))


def layer_report(model: KANModel, qmodel: QuantModel | None, rendered: RenderedModel) -> list[dict]:
    """One dict per layer: edges, bytes by kind, MACs and BitOps (product of operand bit widths)."""
    rows = []
    for index, layer in enumerate(model.layers):
        edges = layer.in_features * layer.out_features
        k1 = layer.order + 1
        float_macs = edges * (layer.n_basis + 1)
        float_bitops = (float_macs + layer.in_features * _cox_de_boor_multiplies(layer.knots.shape[1], layer.order)) \
            * FLOAT_BITS * FLOAT_BITS
        sizes = rendered.layer_bytes[index]
        row = {"index": index, "name": layer.name, "in_features": layer.in_features,
               "out_features": layer.out_features, "edges": edges, "order": layer.order, "n_basis": layer.n_basis,
               "bitops_float32": float_bitops}
        if qmodel is None:
            row.update(basis_mode="cox-de-boor", table_bytes=0, coef_bytes=sum(v for k, v in sizes.items() if "_coef" in k),
                       flash_bytes=sum(sizes.values()), macs=float_macs, bitops=float_bitops)
        elif qmodel.layers[index].strategy == "edge-table":
            ql = qmodel.layers[index]
            requant_bytes = sum(v for k, v in sizes.items() if k.endswith(("_mult", "_rounding", "_shift")))
            # no per-edge multiply: one table read and add per edge; one int32 multiply per output
            # (multiply-free layers: threshold compares, or shifts in the last layer: none at all)
            row.update(strategy=ql.strategy, basis_mode="edge-table", in_bits=ql.act_bits, table_bits=ql.table_bits,
                       clipped_entries=ql.clipped_entries,
                       **({"shared_inputs": ql.shared_inputs} if getattr(ql, "shared_inputs", 0) else {}),
                       table_bytes=sum(sizes.values()) - requant_bytes, coef_bytes=0, base_weight_bytes=0,
                       requant_bytes=requant_bytes, flash_bytes=sum(sizes.values()), macs=0, adds=edges,
                       bitops=0 if getattr(ql, "mul_free", False) else layer.out_features * 32 * 32)
        else:
            ql = qmodel.layers[index]
            coef_bytes = sum(v for k, v in sizes.items() if k.endswith("_coef"))
            weight_bytes = sum(v for k, v in sizes.items() if k.endswith("_weight"))
            requant_bytes = sum(v for k, v in sizes.items()
                                if k.endswith(("_mult_spline", "_mult_base", "_rounding", "_shift")))
            table_bytes = sum(sizes.values()) - coef_bytes - weight_bytes - requant_bytes
            spline_macs, base_macs = edges * k1, edges
            row.update(strategy=ql.strategy, basis_mode=ql.mode, in_bits=ql.act_bits, table_bytes=table_bytes,
                       coef_bytes=coef_bytes, base_weight_bytes=weight_bytes, requant_bytes=requant_bytes,
                       flash_bytes=sum(sizes.values()), macs=spline_macs + base_macs, adds=0,
                       bitops=spline_macs * ql.spline_bits * ql.coef_bits + base_macs * ql.silu_bits * ql.base_bits)
        rows.append(row)
    return rows


def totals(rows: list[dict], rendered: RenderedModel, code_bytes: int = 0) -> dict:
    """Sums over layers, plus the BitOps reduction against float32. ``flash_bytes``: the tables
    (layers' and input API's, exact); ``model_flash_bytes``: plus ``code_bytes`` (the layers' code,
    estimated by kan2mcu.quant.budget.code_bytes): what the flash budget counts."""
    keys = ("edges", "table_bytes", "coef_bytes", "flash_bytes", "macs", "bitops", "bitops_float32")
    out = {k: sum(r.get(k, 0) for r in rows) for k in keys}
    out["input_api_bytes"] = rendered.input_api_bytes  # raw-input thresholds, linked with every integer model
    out["flash_bytes"] += rendered.input_api_bytes
    out["code_bytes"] = int(code_bytes)
    out["model_flash_bytes"] = out["flash_bytes"] + out["code_bytes"]
    out["workspace_bytes"] = rendered.workspace_bytes
    # a multiply-free model has no BitOps to divide by: no reduction factor (not float32's count)
    out["bitops_reduction"] = round(out["bitops_float32"] / out["bitops"], 2) if out["bitops"] else None
    return out


def format_options(options: dict) -> str:
    """``{"act_bits": 8, ...}`` -> ``act 8, spline 8, ... bits`` (readable, in the dict's order)."""
    def one(key, value):
        if isinstance(value, bool):  # a switch: named when on ("mul_free": True -> "multiply-free")
            return {"mul_free": "multiply-free"}.get(key, key.replace("_", " ")) if value else ""
        return f"{key.removesuffix('_bits').replace('_', ' ')} {value}"

    words = [one(key, value) for key, value in options.items()]
    bits = [w for w, key in zip(words, options) if key.endswith("_bits")]
    rest = [w for w, key in zip(words, options) if not key.endswith("_bits") and w]
    return ", ".join(bits) + (" bits" if bits else "") + "".join(f", {w}" for w in rest)


def markdown(report: dict) -> str:
    """Human-readable version of the report (same numbers as the JSON)."""
    lines = [f"# kan2mcu report: {report['model']['name']}", "",
             f"- source: {report['model']['source_format']}, widths {report['model']['widths']}, "
             f"sha256 {report['model']['sha256'][:16]}",
             f"- arithmetic: {report['arith']}" + (f", options: {format_options(report['options'])}"
                                                   if report["options"] else " (float32 C, no quantization)"),
             f"- calibration: {report['calibration']}", *_task_line(report["model"]), "",
             "| layer | in->out | edges | strategy | input bits | basis | tables B | coef B | flash B (tables) | MACs | "
             "BitOps | BitOps float32 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["layers"]:
        lines.append(f"| {r['index']} | {r['in_features']}->{r['out_features']} | {r['edges']} | "
                     f"{r.get('strategy', 'float32')} | {r.get('in_bits', 32)} | {r['basis_mode']} | "
                     f"{r['table_bytes']} | {r['coef_bytes']} | {r['flash_bytes']} | {r['macs']} | {r['bitops']} | "
                     f"{r['bitops_float32']} |")
    t = report["totals"]
    lines.append(f"| total | | {t['edges']} | | | | {t['table_bytes']} | {t['coef_bytes']} | {t['flash_bytes']} | "
                 f"{t['macs']} | {t['bitops']} | {t['bitops_float32']} |")
    lines += ["", "BitOps: per multiply, the product of its two operands' bit widths, summed over one inference "
                  "(the KANtize paper's measure of arithmetic work; float32 counts 32 x 32 per multiply, the "
                  "Cox-de Boor recursion included).",
              "", (f"BitOps reduction vs float32: {t['bitops_reduction']}x." if t["bitops_reduction"] is not None
                   else "BitOps: none (multiply-free: no multiply in the integer model).") + " Static RAM (workspace): "
                  f"{t['workspace_bytes']} bytes. Model flash: {t.get('model_flash_bytes', t['flash_bytes'])} bytes "
                  f"= tables {t['flash_bytes'] - t.get('input_api_bytes', 0)} + input API {t.get('input_api_bytes', 0)} "
                  f"+ code {t.get('code_bytes', 0)} (estimated); `kan2mcu measure` gives the linked firmware's flash "
                  "and RAM."]
    shared = report["layers"][0].get("shared_inputs", 0) if report["layers"] else 0
    if shared:
        lines += ["", f"Input encoding: {shared} of {report['layers'][0]['in_features']} inputs share one encoder "
                      "(alike ranges, within the error slack of kan2mcu.quant.input_share): one threshold row of the "
                      "C input API for all of them."]
    planner = report.get("planner")
    if planner:
        lines += ["", f"Plan ({planner['objective']}, flash budget {planner['flash_budget']} bytes, costs predicted for "
                      f"{planner['core']}; relative output error on the calibration data "
                      f"{_fmt(planner['calibration_error'])}, {planner['plans_considered']} plans weighed):", ""]
        lines += [layer_line(row, markdown=True) for row in planner["layers"]]
        lines += [larger_plan_line(alt, markdown=True) for alt in planner.get("larger_plans", [])]
        if planner.get("warning"):
            lines += ["", f"**Warning:** {planner['warning']}."]
    acc = report.get("accuracy")
    if acc and report["arith"] == "float":
        lines += ["", f"Accuracy on the {acc['dataset']} {acc['split']} split ({acc['samples']} samples): "
                      f"float model {acc['float']:.4f} (the float32 C computes the same model)."]
    elif acc:
        lines += ["", f"Accuracy on the {acc['dataset']} {acc['split']} split ({acc['samples']} samples): "
                      f"float {acc['float']:.4f}, quantized {acc['quantized']:.4f} "
                      f"(max |logit error| {acc['max_abs_logit_error']:.4g})."]
    if report.get("evaluation"):
        from kan2mcu.quant.evaluate import markdown as evaluation_markdown

        lines += ["", evaluation_markdown(report["evaluation"])]
    fold = report.get("fold_silu")
    if fold:
        parts = [f"{r['layer']} {'folded' if r['folded'] else 'kept (over the limit)'}, "
                 f"{100 * r['rms_error']:.3g}% RMS / {100 * r['max_error']:.3g}% max" for r in fold["layers"]]
        lines += ["", f"--fold-silu (SiLU branches refit into the splines; float outputs change, as a share of "
                      f"their range, on {fold['samples']} samples; limit {100 * fold['limit']:.2f}% RMS): "
                      + "; ".join(parts) + f"; whole model {100 * fold['model']['rms_error']:.3g}% RMS / "
                      f"{100 * fold['model']['max_error']:.3g}% max."]
    text = "\n".join(lines) + "\n" + f"\nBase activation: {report['model']['base_activation']}.\n"
    if "calibration_rows" in report:
        text += coverage.markdown(report["calibration_rows"], report.get("coverage"))
    text += guard.markdown(report["guard"]) if report.get("guard") else ""
    return text + notes_markdown(report.get("notes"))


def notes_markdown(notes: list | None) -> str:
    """The report's notes (what does not change the result by itself; generate prints only their
    count), one item each, or nothing without notes."""
    if not notes:
        return ""
    return "\n".join(["", "## Notes", "", *(f"- {note}" for note in notes)]) + "\n"


def _task_line(model: dict) -> list[str]:
    """The task the output-error metric used (planner, guard), and where it came from."""
    if "task" not in model:
        return []
    metric = ("argmax agreement and RMS error" if model["task"] == "classify" else "RMS error")
    return [f"- task: {model['task']} ({model['task_source']}): the output error weighs {metric}"]


def _fmt(value) -> str:
    return "n/a (no calibration data)" if value is None else f"{value:.4f}"


def build_report(*, version: str, arith: str, model_info: dict, options: dict, calibration: str, rows: list[dict],
                 rendered: RenderedModel, sections: dict, code_bytes: int = 0) -> dict:
    """The report.json dict: the model, options, calibration, per-layer rows and totals, then the
    optional sections (plan, planner, guard, evaluation, accuracy, coverage, fold_silu, ...) that
    are not None, in the keys docs/report-keys.md documents."""
    report = {"kan2mcu_version": version, "arith": arith, "model": model_info, "options": options,
              "calibration": calibration, "layers": rows, "totals": totals(rows, rendered, code_bytes)}
    report.update({key: value for key, value in sections.items() if value is not None})
    return report
