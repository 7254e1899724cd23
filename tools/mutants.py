"""The deliberate bugs of the mutation suite (``make mutants``), one entry per mutant.

Each mutant is a list of exact text edits ``(file, old, new)`` applied to a temporary copy of the
repository, and a short list of pytest node ids that must FAIL while it is applied. ``old`` must
occur exactly once in its file: when the code moves, the suite fails naming the mutant, and the
pattern has to be re-pointed here (never deleted to make the suite pass).

``fast`` marks the subset CI runs on every change (``make mutants-fast``); ``make mutants`` runs all.
"""
from __future__ import annotations

from dataclasses import dataclass

T = "host_tests/"


@dataclass(frozen=True)
class Mutant:
    name: str
    why: str  # the class of bug it stands for
    edits: tuple[tuple[str, str, str], ...]  # (file, exact old text, new text)
    tests: tuple[str, ...]  # pytest node ids that must kill it
    fast: bool = True


MUTANTS = (
    # --- quantization (fixedpoint.py, strategies/spline.py): numbers the C and the reference share,
    #     so bit-exact tests are blind to them ---
    Mutant("requant-rounding-dropped",
           "requantization truncates instead of rounding, in the C and the reference alike",
           (("kan2mcu/fixedpoint.py", "r[o] = int(round(bias[o] * 2.0**shift)) + (1 << (shift - 1))",
             "r[o] = int(round(bias[o] * 2.0**shift))"),),
           (T + "test_accuracy.py::test_digits_logits_track_the_float_model[8-8-8]",
            T + "test_accuracy.py::test_inner_layer_requantization_rounds_to_nearest[8x5x3-G5-k3]",
            T + "test_tables.py::test_requantization_constants_follow_the_spec[8x5x3-G5-k3-8-8-8]")),
    Mutant("cardinal-table-one-position-off",
           "the cardinal B-spline table is sampled one position late (C and reference share it)",
           (("kan2mcu/strategies/spline.py", "(np.arange(p) + 0.0)", "(np.arange(p) + 1.0)"),),
           (T + "test_tables.py::test_basis_tables_approximate_the_bsplines[8x5x3-G5-k3-8-8-8]",
            T + "test_accuracy.py::test_digits_logits_track_the_float_model[8-8-8]")),
    Mutant("coefficients-floored",
           "spline coefficients quantized by floor instead of round to nearest",
           (("kan2mcu/fixedpoint.py", "q = np.clip(np.round(values / scale.reshape(shape)), -qmax, qmax)",
             "q = np.clip(np.floor(values / scale.reshape(shape)), -qmax, qmax)"),),
           (T + "test_tables.py::test_weights_round_to_nearest[8x5x3-G5-k3-8-8-8]",
            T + "test_accuracy.py::test_small_models_track_torch_float64[8x5x3-G5-k3-8-8-8]")),
    Mutant("input-zero-point-off-by-one",
           "the first-layer zero point is one code off the grid alignment the tables assume",
           (("kan2mcu/strategies/spline.py", '"zero": -offset - t0 / scale', '"zero": -offset + 1 - t0 / scale'),),
           (T + "test_tables.py::test_basis_tables_approximate_the_bsplines[8x5x3-G5-k3-8-8-8]",
            T + "test_accuracy.py::test_small_models_track_torch_float64[8x5x3-G5-k3-8-8-8]")),
    Mutant("right-edge-normalization-reversed",
           "B-splines past the last coefficient shifted the wrong way (per-input tables and reference)",
           (("kan2mcu/strategies/spline.py",
             "basis[sel] = np.concatenate([np.zeros((int(sel.sum()), d), basis.dtype), basis[sel][:, : k1 - d]], axis=1)",
             "basis[sel] = np.concatenate([basis[sel][:, d:], np.zeros((int(sel.sum()), d), basis.dtype)], axis=1)"),),
           (T + "test_tables.py::test_basis_tables_approximate_the_bsplines[nonuniform-5x4x3-8-8-8]",
            T + "test_bit_exact.py::test_small_models_bit_exact[8x5x3-G5-k3-8bit-spline]")),
    # --- the Python reference (spline strategy) ---
    Mutant("reference-truncates-toward-zero",
           "the Python reference rounds negative results toward zero where the C floors",
           (("kan2mcu/strategies/spline.py", "return total >> layer.shift[None, :]",
             "return np.sign(total) * (np.abs(total) >> layer.shift[None, :])"),),
           (T + "test_bit_exact.py::test_small_models_bit_exact[8x5x3-G5-k3-8bit-spline]",)),
    # --- templates (the C) ---
    Mutant("float-api-syntax-error",
           "a syntax error inside the optional float API (compiled only with <PREFIX>_WITH_FLOAT_API)",
           (("templates/model_api_int.c.j2", "            codes[i] = 0u;\n            continue;\n",
             "            codes[i] = 0u\n            continue;\n"),),
           (T + "test_float_api.py::test_float_api_compiles_warning_free[act8-host]",
            T + "test_float_api.py::test_float_api_compiles_warning_free[act8-cortex-m4f]")),
    Mutant("smlad-rotation-wrong",
           "the DSP (SMLAD) path pairs coefficients with the wrong rotation: only a Cortex-M4/M7 sees it",
           (("templates/kernels/spline.c.j2", "(cw >> 8) | (cw << 24)", "(cw >> 16) | (cw << 16)"),),
           (T + "test_firmware_digits.py::test_generated_small_model_on_firmware[qemu-cortex-m4-spline]",)),
    Mutant("c-silu-branch-dropped",
           "the C forgets the SiLU (base) branch",
           (("templates/kernels/spline.c.j2",
             "acc_base += (int32_t){{ L.weight }}[o * {{ L.n_in }}u + i] * (int32_t){{ prefix }}_ws_silu[i];",
             "acc_base += 0;"),),
           (T + "test_bit_exact.py::test_small_models_bit_exact[8x5x3-G5-k3-8bit-spline]",)),
    Mutant("c-first-layer-clamp-missing",
           "first-layer codes above the maximum are not clamped (act bits < 8): out-of-bounds reads",
           (("templates/kernels/spline.c.j2",
             "uint32_t q = in[i] > {{ L.code_max }}u ? {{ L.code_max }}u : (uint32_t)in[i];",
             "uint32_t q = (uint32_t)in[i];"),),
           (T + "test_bit_exact.py::test_small_models_bit_exact[8x5x3-G5-k3-4bit-spline]",)),
    Mutant("c-inner-saturation-off-by-one",
           "inner layers saturate one code below the maximum",
           (("templates/kernels/spline.c.j2", "            y = {{ L.out_code_max }};\n",
             "            y = {{ L.out_code_max }} - 1;\n"),),
           (T + "test_bit_exact.py::test_small_models_bit_exact[8x5x3-G5-k3-8bit-spline]",
            T + "test_bit_exact.py::test_small_models_bit_exact[6x4x4x2-G3-k2-8bit-spline]")),
    # --- the edge-table strategy ---
    Mutant("edge-table-rounding-dropped",
           "edge-table requantization truncates instead of rounding (C and reference alike)",
           (("kan2mcu/fixedpoint.py", "r = int(round(float(offset[o]) * 2.0**s)) + (1 << (s - 1))",
             "r = int(round(float(offset[o]) * 2.0**s))"),),
           (T + "test_accuracy.py::test_edge_table_inner_layers_round_to_nearest[8x5x3-G5-k3]",)),
    Mutant("edge-table-entries-floored",
           "edge-table entries quantized by floor instead of round to nearest",
           (("kan2mcu/strategies/edge_table.py", "scaled = np.round((edge_rows(i) - centre[i]) / entry_scale[None, :])",
             "scaled = np.floor((edge_rows(i) - centre[i]) / entry_scale[None, :])"),),
           (T + "test_accuracy.py::test_edge_table_inner_layers_round_to_nearest[8x5x3-G5-k3]",
            T + "test_accuracy.py::test_edge_table_small_models_track_torch_float64[8x5x3-G5-k3-8-8]")),
    Mutant("edge-table-swar-odd-lanes",
           "the portable lane adds take the odd bytes from the wrong position",
           (("templates/model_int.c.j2", "(odd) += ((word) >> 8) & 0x00FF00FFu;", "(odd) += ((word) >> 16) & 0x00FF00FFu;"),),
           (T + "test_bit_exact.py::test_small_models_bit_exact[8x5x3-G5-k3-8bit-edge-table]",)),
    Mutant("edge-table-uxtab16-rotation-wrong",
           "the DSP lane adds (UXTAB16) rotate the odd bytes wrongly: only a Cortex-M4/M7 sees it",
           (("templates/model_int.c.j2", '"uxtab16 %0, %1, %2, ror #8"', '"uxtab16 %0, %1, %2, ror #16"'),),
           (T + "test_firmware_digits.py::test_generated_small_model_on_firmware[qemu-cortex-m4-edge-table]",)),
    Mutant("edge-table-nibble-mask-wrong",
           "4-bit (nibble) edge-table entries: the high nibbles are masked to 3 bits",
           (("kan2mcu/render.py", '{"id": 1, "shift": 4, "mask": "0x0F0F0F0Fu"}', '{"id": 1, "shift": 4, "mask": "0x07070707u"}'),),
           (T + "test_bit_exact.py::test_small_models_bit_exact[8x5x3-G5-k3-4bit-edge-table]",
            T + "test_bit_exact.py::test_small_models_bit_exact[6x4x4x2-G3-k2-4bit-edge-table]")),
    # --- packing ---
    Mutant("packing-bit-order-flipped",
           "bit order flipped in pack and unpack together (they stay each other's inverse)",
           (("kan2mcu/packing.py", 'np.packbits(padded.reshape(-1, 8), axis=1, bitorder="little")',
             'np.packbits(padded.reshape(-1, 8), axis=1, bitorder="big")'),
            ("kan2mcu/packing.py", 'np.unpackbits(raw, bitorder="little")', 'np.unpackbits(raw, bitorder="big")')),
           (T + "test_packing.py::test_golden_bytes[3bit-unsigned]",
            T + "test_packing.py::test_unpack_golden_bytes[3bit-unsigned]")),
    # --- report ---
    Mutant("report-flash-bytes-wrong",
           "report.json's flash_bytes leaves out the coefficient bytes",
           (("kan2mcu/report.py", "flash_bytes=sum(sizes.values()), macs=spline_macs + base_macs",
             "flash_bytes=sum(sizes.values()) - coef_bytes, macs=spline_macs + base_macs"),),
           (T + "test_report_bytes.py::test_report_bytes_equal_host_object_symbols[small-6-5-6]",
            T + "test_report_bytes.py::test_report_bytes_equal_host_object_symbols[nonuniform-8-3-8]")),
    Mutant("report-bitops-wrong",
           "BitOps counted with the spline width twice instead of spline x coefficient width",
           (("kan2mcu/report.py", "bitops=spline_macs * ql.spline_bits * ql.coef_bits",
             "bitops=spline_macs * ql.spline_bits * ql.spline_bits"),),
           (T + "test_generate.py::test_header_and_report",)),
    # --- the float model and the importers ---
    Mutant("float-silu-wrong",
           "the float model's SiLU is wrong (every kan2mcu evaluation agrees with itself)",
           (("kan2mcu/bspline.py", "return x * (0.5 * (1.0 + np.tanh(0.5 * x)))",
             "return x * (0.5 * (1.0 + np.tanh(x)))"),),
           (T + "test_accuracy.py::test_float_model_equals_torch_forward[8x5x3-G5-k3]",
            T + "test_tables.py::test_silu_tables_approximate_silu[8x5x3-G5-k3-8-8-8]")),
    Mutant("efficient-kan-scaler-ignored",
           "the efficient-kan importer forgets spline_scaler",
           (("kan2mcu/importers/efficient_kan.py",
             "coef = spline_weight * (scaler[..., None] if scaler is not None else 1.0)",
             "coef = spline_weight * 1.0"),),
           (T + "test_accuracy.py::test_float_model_equals_torch_forward[nonuniform-5x4x3]",
            T + "test_import_efficient_kan.py::test_non_uniform_checkpoint_imports[bare-4x6x3-G5-k3]")),
    Mutant("pykan-scale-sp-ignored",
           "the pykan importer forgets scale_sp when folding the spline branch",
           (("kan2mcu/importers/pykan.py", "folded_coef = (coef * (edge * scale_sp)[:, :, None])",
             "folded_coef = (coef * edge[:, :, None])"),),
           (T + "test_import_pykan.py::test_fit_then_convert_matches_pykan",), fast=False),
    # --- your own data (train --data, generate --eval-data) ---
    Mutant("feature-scaling-ignored-by-c-float-api",
           "the C float input API's thresholds forget the checkpoint's per-column feature scaling",
           (("kan2mcu/input_codec.py", "return _float_from_key(keys).astype(np.float64) * float_scale + float_offset",
             "return _float_from_key(keys).astype(np.float64)"),),
           (T + "test_own_data.py::test_c_float_api_on_raw_csv_values_gives_the_reported_accuracy",
            T + "test_own_data.py::test_own_data_models_are_bit_exact")),
    Mutant("r2-not-centred",
           "R2 divides by the sum of squares of the targets instead of their variance",
           (("kan2mcu/train.py", "total = float(np.sum((y - y.mean()) ** 2))", "total = float(np.sum(y ** 2))"),),
           (T + "test_own_data.py::test_regression_metrics_match_scikit_learn",)),
    # --- verification and firmware result handling ---
    Mutant("verify-never-compares",
           "kan2mcu verify reports success without comparing C and reference",
           (("kan2mcu/verify.py", "if not np.array_equal(c_out, ref):", "if False and not np.array_equal(c_out, ref):"),),
           (T + "test_bit_exact.py::test_mismatch_is_reported",)),
    Mutant("result-line-float-bits-swapped",
           "the firmware result line's binary32 patterns decoded with the wrong byte order",
           (("kan2mcu/firmware/resultline.py", 'struct.unpack("<f", struct.pack("<I", int(text, 16)))',
             'struct.unpack("<f", struct.pack(">I", int(text, 16)))'),),
           (T + "test_firmware_project.py::test_result_line_parsing_decodes_float_bits",)),
    Mutant("measure-ignores-firmware-check",
           "kan2mcu measure reports PASS whatever the firmware's self-check said",
           (("kan2mcu/firmware/measure.py", 'entry["check"] = "PASS" if result.get("check") == "PASS" else "FAIL"',
             'entry["check"] = "PASS"'),),
           (T + "test_firmware_qemu.py::test_measure_cli_exits_non_zero_on_fail",), fast=False),
)
