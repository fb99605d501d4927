"""The report's memory section: the analytic model (cost_model.py) at the paper's shapes, and each
mode's measured growth beside it at the timed shape."""

from __future__ import annotations

import statistics

from benchmarks.suite import cost_model as cm
from benchmarks.suite.modes import AUXILIARY
from benchmarks.suite.report_tables import GB, MIB, METHODS, Rows, gb, mib, ratio, table
from benchmarks.suite.workload import Spec
from fast_electra_ds.config import load_config

# Modes the memory model describes: the peer masks and samples inside its forward, with
# tensors of electra-pytorch's own that it does not count.
MEMORY_MODELLED = ("electra", "fast-electra", "disc-only")


def memory_section(rows: Rows, measured: dict[str, list[dict]], spec: Spec, precision: str
                   ) -> tuple[dict[str, str], dict]:
    """The analytic model at the paper's shapes, and measured against it at the timed shape;
    returns (template values, ratios per paper size and at the timed shape)."""
    batch_by_size = {size: load_config(size).train.micro_batch_size for size in cm.PAPER_SHAPES}
    ratios = {}
    paper_rows, breakdown_rows = [], []
    for size, (main, aux) in cm.PAPER_SHAPES.items():
        p = cm.PAPER_MEMORY_GB[size]
        kw = dict(batch=batch_by_size[size], seq_len=cm.PAPER_SEQ_LEN,
                  vocab_size=cm.PAPER_VOCAB, max_positions=cm.PAPER_SEQ_LEN,
                  precision="bf16", frozen_bytes_per_param=2)
        main_j, aux_j = cm.step_memory(main, aux, cm.JOINT, **kw)
        main_f, aux_f = cm.step_memory(main, aux, cm.FAST, **kw)
        peak_j, peak_f = cm.peak_bytes(main_j, aux_j), cm.peak_bytes(main_f, aux_f)
        share_j, share_f = peak_j - main_j.total, peak_f - main_f.total  # aux's part of the peak
        paper_rows += [
            [size, "Original (joint)", f"{p['main']}", gb(main_j.total), f"{p['aux_joint']}",
             gb(aux_j.total), gb(share_j), f"{p['total_joint']}", gb(peak_j)],
            [size, "Fast-ELECTRA", f"{p['main']}", gb(main_f.total), f"{p['aux_fast']}",
             gb(aux_f.total), gb(share_f), f"{p['total_fast']}", gb(peak_f)],
            [size, "ratio fast/joint", "1.00", ratio(main_f.total, main_j.total),
             ratio(p["aux_fast"], p["aux_joint"]), ratio(aux_f.total, aux_j.total),
             ratio(share_f, share_j), ratio(p["total_fast"], p["total_joint"]),
             ratio(peak_f, peak_j)],
        ]
        for label, m in (("main (both)", main_j), ("aux joint", aux_j), ("aux fast", aux_f)):
            breakdown_rows.append([size, label, gb(m.weights), gb(m.grads), gb(m.optimizer),
                                   gb(m.activations), gb(m.inference_peak), gb(m.total)])
        ratios[size] = {"aux_held": aux_f.total / aux_j.total, "aux_peak": share_f / share_j,
                        "aux_paper": p["aux_fast"] / p["aux_joint"],
                        "transient_over_main_activations":
                            aux_f.inference_peak / main_f.activations,
                        "total": peak_f / peak_j,
                        "total_paper": p["total_fast"] / p["total_joint"]}
        for (mode, key, _), m, a, peak in zip(METHODS, (main_j, main_f), (aux_j, aux_f),
                                              (peak_j, peak_f)):
            for comp, mem in (("main", m), ("aux", a)):
                for part in ("weights", "grads", "optimizer", "activations", "inference_peak"):
                    rows.add("memory", f"paper-{size}", mode, comp, f"analytic_{part}",
                             getattr(mem, part) / GB, "GB")
                rows.add("memory", f"paper-{size}", mode, comp, "analytic_total",
                         mem.total / GB, "GB")
            rows.add("memory", f"paper-{size}", mode, "aux", "analytic_share_of_peak",
                     (peak - m.total) / GB, "GB")
            rows.add("memory", f"paper-{size}", mode, "total", "analytic_peak", peak / GB, "GB")
            rows.add("memory", f"paper-{size}", mode, "total", "paper", p[f"total_{key}"], "GB")
        rows.add("memory", f"paper-{size}", "fast/joint", "aux", "ratio_held",
                 ratios[size]["aux_held"], "")
        rows.add("memory", f"paper-{size}", "fast/joint", "aux", "ratio_share_of_peak",
                 ratios[size]["aux_peak"], "")
    measured_values = _measured_memory(rows, measured, spec, precision, ratios)
    return {
        "paper_batches": ", ".join(f"{b} ({s})" for s, b in batch_by_size.items()),
        "memory_paper_table": table(
            ["model", "method", "main: paper", "main: ours", "aux: paper", "aux: ours, held",
             "aux: ours, share of the peak", "total: paper", "total: ours (peak)"], paper_rows),
        "memory_breakdown_table": table(
            ["model", "part", "weights", "gradients", "optimizer (master + m + v)",
             "activations", "inference peak (transient)", "held total"], breakdown_rows),
        **measured_values,
    }, ratios


def _measured_memory(rows: Rows, measured: dict[str, list[dict]], spec: Spec, precision: str,
                     ratios: dict) -> dict[str, str]:
    """Each mode's growth in its fresh processes beside the analytic peak at the timed shape;
    adds the auxiliary fast/joint ratios at that shape to `ratios`."""
    disc, gen = spec.encoders()
    cfg = spec.config()
    on_cuda = spec.device == "cuda"
    analytic = {}
    for mode in MEMORY_MODELLED:
        m, a = cm.step_memory(disc, gen, AUXILIARY[mode], batch=spec.batch, seq_len=spec.seq_len,
                              vocab_size=spec.vocab_size,
                              max_positions=cfg.model.max_position_embeddings,
                              precision=precision, frozen_bytes_per_param=2 if on_cuda else 4,
                              mask_prob=cfg.masking.mask_prob)
        peak = cm.peak_bytes(m, a)
        analytic[mode] = (peak, peak - m.total)

    base = [r["growth_bytes"] for r in measured["disc-only"]]
    aux_median = {}
    out = []
    for mode, runs in measured.items():
        growth = [r["growth_bytes"] for r in runs]
        aux = [g - b for g, b in zip(growth, base)]
        aux_median[mode] = statistics.median(aux)
        a_total, a_aux = analytic.get(mode, (None, None))
        out.append([mode, mib([r["before_bytes"] for r in runs]),
                    mib([r["peak_bytes"] for r in runs]), mib(growth),
                    f"{a_total / MIB:,.1f}" if a_total is not None else "-",
                    mib(aux) if mode != "disc-only" else "0",
                    f"{a_aux / MIB:,.1f}" if a_aux is not None else "-"])
        for metric, values in (("measured_before", [r["before_bytes"] for r in runs]),
                               ("measured_peak", [r["peak_bytes"] for r in runs]),
                               ("measured_growth", growth)):
            rows.add("memory", "timed-shape", mode, "total", metric,
                     statistics.median(values) / MIB, "MiB")
        rows.add("memory", "timed-shape", mode, "aux", "measured_growth_minus_disc_only",
                 aux_median[mode] / MIB, "MiB")
        if a_total is not None:
            rows.add("memory", "timed-shape", mode, "total", "analytic", a_total / MIB, "MiB")
    ja, fa = aux_median["electra"], aux_median["fast-electra"]
    ratios["measured_aux"] = fa / ja if ja > 0 else float("nan")
    ratios["analytic_aux"] = analytic["fast-electra"][1] / analytic["electra"][1]
    return {
        "memory_rounds": str(len(measured["disc-only"])),
        "memory_steps": str(measured["disc-only"][0]["steps"]),
        "memory_measured_table": table(
            ["mode", "before (MiB)", "peak (MiB)", "growth (MiB)", "analytic (MiB)",
             "aux = growth - disc-only (MiB)", "aux analytic (MiB)"], out),
        "fast_aux_mib": f"{fa / MIB:.1f}", "joint_aux_mib": f"{ja / MIB:.1f}",
        "measured_aux": f"{ratios['measured_aux']:.2f}",
        "analytic_aux": f"{ratios['analytic_aux']:.2f}",
    }
