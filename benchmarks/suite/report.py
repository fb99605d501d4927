"""The benchmark's report: the analytic model (cost_model.py) beside what measure.py measured, as
Markdown and CSV.

Each section computes its values and tables from the data; templates/report.md holds the
report's text with $placeholders that string.Template fills (templates/targets.yaml: the texts
of the Targets table; templates/devices.yaml: what the report says differently per device).
Every number also becomes a CSV row (`Rows`, report_tables.py), which the plots read; the memory
section is report_memory.py.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from string import Template

import torch
import yaml

from benchmarks.suite import cost_model as cm
from benchmarks.suite.measure import Timing, paired_ratio
from benchmarks.suite.modes import AUXILIARY
from benchmarks.suite.report_memory import memory_section
from benchmarks.suite.report_tables import METHODS, Rows, err, gf, ratio, table
from benchmarks.suite.workload import ELECTRA_VOCAB, Spec
from fast_electra_ds.config import list_recipes, load_config
from fast_electra_ds.data.masking import num_predictions
from fast_electra_ds.method.flops import TRAINED, Encoder

TEMPLATES = Path(__file__).parent / "templates"
# Checked in the report, never asserted: fast/joint compute at the paper's shapes and
# auxiliary memory (the paper's claims), and step-time ratios at the timed shape.
# time_fast_joint is relative: at most 3% above the FLOP ratio at the timed shape.
TARGETS = {"compute_base": 0.70, "compute_large": 0.76, "aux_memory": 0.04,
           "time_fast_joint": 1.03, "time_fast_disc": 1.08, "time_electra_peer": 1.0,
           "sampling_over_forward": 0.25}


@dataclass
class Measured:
    """What measure.py measured in one run of the suite."""

    flops: dict[str, int]  # mode -> FlopCounterMode's count of one step (the micro-batch)
    memory: dict[str, list[dict]]  # mode -> measure.memory_child's result, per round
    timings: dict[str, Timing]
    breakdown: dict[str, float]  # measure.corrupt_breakdown
    notes: dict[str, str]  # mode -> the time table's note
    reps: int  # how the timings were taken (measure.time_modes)
    steps_per_rep: int
    warmup_steps: int


def render(*, spec: Spec, suite: str, about: dict[str, str], measured: Measured,
           precision: str, ds_config: str) -> tuple[str, Rows]:
    """The Markdown report and its CSV rows. about: the lines under the title (command,
    machine, ...)."""
    rows = Rows()
    common = {"device": spec.device, "suite": suite, "recipe": spec.recipe,
              "batch": spec.batch, "seq_len": spec.seq_len, "vocab": f"{spec.vocab_size:,}",
              "precision": precision, "ds_config": ds_config,
              "about": "\n".join(f"{k}: {v}  " for k, v in about.items()),
              **_load("devices.yaml")[spec.device]}
    compute, compute_ratios = compute_section(rows, measured.flops, spec)
    memory, memory_ratios = memory_section(rows, measured.memory, spec, precision)
    timing, time_ratios = time_section(rows, measured, spec)
    targets = {"targets_table": targets_table(rows, compute_ratios, memory_ratios, time_ratios,
                                              spec)}
    headline = _headline(compute_ratios, memory_ratios)
    text = Template((TEMPLATES / "report.md").read_text()).substitute(
        {**common, **headline, **targets, **compute, **memory, **timing})
    return text, rows


# --------------------------------------------------------------------------------------------
# Templates and the headline


def _load(name: str) -> dict:
    return yaml.safe_load((TEMPLATES / name).read_text())


def _headline(compute: dict, memory: dict) -> dict[str, str]:
    """The headline's ratios at the paper's shapes (the step-time ones come with the time
    section)."""
    out = {}
    for size in cm.PAPER_SHAPES:
        c, m = compute[size], memory[size]
        out |= {f"{size}_ours": f"{c['ours']:.2f}", f"{size}_paper_acct": f"{c['paper_acct']:.2f}",
                f"{size}_paper": f"{c['paper']:.2f}", f"{size}_aux_held": f"{m['aux_held']:.3f}",
                f"{size}_aux_peak": f"{m['aux_peak']:.3f}",
                f"{size}_aux_paper": f"{m['aux_paper']:.3f}", f"{size}_total": f"{m['total']:.2f}",
                f"{size}_total_paper": f"{m['total_paper']:.2f}"}
    return out


# --------------------------------------------------------------------------------------------
# Section 1: compute


def compute_section(rows: Rows, measured_flops: dict[str, int], spec: Spec
                    ) -> tuple[dict[str, str], dict]:
    """Tables of the paper, its accounting and ours; returns (template values, ratios per
    paper size)."""
    ratios = {}
    paper_rows = []
    for size, (main, aux) in cm.PAPER_SHAPES.items():
        p = cm.PAPER_GFLOPS[size]
        got = {}
        for mode, key, part in METHODS:
            paper_acct = cm.paper_step_flops(main, aux, part)
            ours = cm.step_flops(main, aux, part, seq_len=cm.PAPER_SEQ_LEN,
                                 vocab_size=cm.PAPER_VOCAB)
            got[key] = (paper_acct, ours)
            paper_rows.append([size, "Original (joint)" if key == "joint" else "Fast-ELECTRA",
                               f"{p['main']:,.1f}", gf(paper_acct.main), gf(ours.main),
                               f"{p['aux_' + key]:,.1f}", gf(paper_acct.aux), gf(ours.aux),
                               f"{p['total_' + key]:,.1f}", gf(paper_acct.total),
                               gf(ours.total)])
            for acct, sf in (("paper-accounting", paper_acct), ("ours", ours)):
                for comp in ("main", "aux", "total"):
                    rows.add("compute", f"paper-{size}", mode, comp, f"gflops_{acct}",
                             getattr(sf, comp) / 1e9, "GFLOP/sequence")
            for comp in ("main", "aux", "total"):
                rows.add("compute", f"paper-{size}", mode, comp, "gflops_paper",
                         p[comp if comp == "main" else f"{comp}_{key}"], "GFLOP/sequence")
        (pj, oj), (pf, of) = got["joint"], got["fast"]
        paper_rows.append([size, "ratio fast/joint", "1.00", ratio(pf.main, pj.main),
                           ratio(of.main, oj.main), ratio(p["aux_fast"], p["aux_joint"]),
                           ratio(pf.aux, pj.aux), ratio(of.aux, oj.aux),
                           ratio(p["total_fast"], p["total_joint"]),
                           ratio(pf.total, pj.total), ratio(of.total, oj.total)])
        ratios[size] = {"paper": p["total_fast"] / p["total_joint"],
                        "paper_acct": pf.total / pj.total, "ours": of.total / oj.total,
                        "aux_over_main_paper": pf.aux / pf.main,
                        "aux_over_main_ours": of.aux / of.main,
                        "offline_paper": pj.main / pj.total}
        for acct, value in (("paper", ratios[size]["paper"]),
                            ("paper-accounting", ratios[size]["paper_acct"]),
                            ("ours", ratios[size]["ours"])):
            rows.add("compute", f"paper-{size}", "fast/joint", "total", f"ratio_{acct}", value,
                     "")
    return {
        "paper_seq_len": str(cm.PAPER_SEQ_LEN), "paper_vocab": f"{cm.PAPER_VOCAB:,}",
        "paper_k": str(num_predictions(cm.PAPER_SEQ_LEN, cm.MASK_PROB)),
        "compute_paper_table": table(
            ["model", "method", "main: paper", "main: paper acct.", "main: ours", "aux: paper",
             "aux: paper acct.", "aux: ours", "total: paper", "total: paper acct.",
             "total: ours"], paper_rows),
        "compute_implied_table": _implied_vocab_table(rows),
        "recipe_vocab": f"{ELECTRA_VOCAB:,}",
        "compute_recipes_table": _recipes_table(rows),
        "compute_counted_table": _counted_table(rows, measured_flops, spec),
    }, ratios


def _implied_vocab_table(rows: Rows) -> str:
    """Which shapes reproduce the paper's table: the vocabulary each cell implies with the
    Fast-ELECTRA auxiliary shape, and how far the recipes' (ELECTRA's) joint generators land."""
    out = []
    for size, (main, aux) in cm.PAPER_SHAPES.items():
        p = cm.PAPER_GFLOPS[size]
        recipe = load_config(size)
        electra_gen = Encoder.generator(recipe.generator, recipe.model.embedding_size)
        v_main = cm.paper_implied_vocab(p["main"] / TRAINED, main)
        v_aux = cm.paper_implied_vocab(p["aux_fast"], aux)
        narrow = cm.paper_forward_flops(electra_gen)
        # the narrow generator's vocabulary projection runs at the embedding width E, not H
        narrow += 2 * cm.PAPER_SEQ_LEN * cm.PAPER_VOCAB * (
            electra_gen.embedding_size - electra_gen.hidden_size)
        out.append([size, f"{v_main:,.0f}", aux.describe(), f"{v_aux:,.0f}",
                    electra_gen.describe(), f"{narrow / 1e9:.1f} vs paper {p['aux_fast']:.1f} "
                    f"({narrow / 1e9 / p['aux_fast'] - 1:+.0%})"])
        rows.add("compute", f"paper-{size}", "-", "main", "implied_vocab", v_main, "tokens")
        rows.add("compute", f"paper-{size}", "-", "aux", "implied_vocab", v_aux, "tokens")
        rows.add("compute", f"paper-{size}", "-", "aux", "recipe_generator_forward_gflops",
                 narrow / 1e9, "GFLOP/sequence")
    return table(["model", "V implied by main", "Fast-ELECTRA aux shape", "V implied by aux",
                  "recipe generator.*", "its forward, paper accounting (GFLOPs)"], out)


def _recipes_table(rows: Rows) -> str:
    """Every bundled recipe, ours: the auxiliary model is its generator.* in both methods."""
    out = []
    for name in list_recipes():
        cfg = load_config(name)
        disc = Encoder.discriminator(cfg.model)
        gen = Encoder.generator(cfg.generator, cfg.model.embedding_size)
        shape = dict(seq_len=cfg.data.seq_len, vocab_size=ELECTRA_VOCAB,
                     mask_prob=cfg.masking.mask_prob)
        j = cm.step_flops(disc, gen, cm.JOINT, **shape)
        f = cm.step_flops(disc, gen, cm.FAST, **shape)
        out.append([name, str(cfg.data.seq_len), gf(j.main), gf(j.aux), gf(f.aux),
                    gf(j.total), gf(f.total), ratio(f.aux, j.aux), ratio(f.total, j.total)])
        for (mode, _, _), sf in zip(METHODS, (j, f)):
            for comp in ("main", "aux", "total"):
                rows.add("compute", f"recipe-{name}", mode, comp, "gflops_ours",
                         getattr(sf, comp) / 1e9, "GFLOP/sequence")
    return table(["recipe", "seq_len", "main", "aux joint", "aux fast", "total joint",
                  "total fast", "aux fast/joint", "total fast/joint"], out)


def _counted_table(rows: Rows, measured_flops: dict[str, int], spec: Spec) -> str:
    """FlopCounterMode on one real step of each mode at the timed shape, against ours. The main
    model's step is disc-only's; a mode's auxiliary cost is its step minus that."""
    disc, gen = spec.encoders()
    mask_prob = spec.mask_prob
    out = []
    main_measured = measured_flops["disc-only"] / spec.batch
    for mode, step_measured in measured_flops.items():
        analytic = cm.step_flops(disc, gen, AUXILIARY[mode], seq_len=spec.seq_len,
                                 vocab_size=spec.vocab_size, mask_prob=mask_prob)
        total_m = step_measured / spec.batch
        aux_m = total_m - main_measured
        out.append([mode, f"{analytic.total / 1e9:.4f}", f"{total_m / 1e9:.4f}",
                    err(total_m, analytic.total), f"{analytic.aux / 1e9:.4f}",
                    f"{aux_m / 1e9:.4f}", err(aux_m, analytic.aux)])
        for comp, a, m in (("total", analytic.total, total_m), ("aux", analytic.aux, aux_m)):
            rows.add("compute", "timed-shape", mode, comp, "gflops_analytic", a / 1e9,
                     "GFLOP/sequence")
            rows.add("compute", "timed-shape", mode, comp, "gflops_flopcounter", m / 1e9,
                     "GFLOP/sequence")
    return table(["mode", "step analytic", "step measured", "error", "aux analytic",
                  "aux measured", "error"], out)


# --------------------------------------------------------------------------------------------
# Section 3: time


def time_section(rows: Rows, measured: Measured, spec: Spec) -> tuple[dict[str, str], dict]:
    """Step times side by side; returns (template values, the ratios the targets check)."""
    timings = measured.timings
    tokens = spec.batch * spec.seq_len
    disc, gen = spec.encoders()
    mask_prob = spec.mask_prob
    step_flops = {mode: cm.step_flops(disc, gen, AUXILIARY[mode], seq_len=spec.seq_len,
                                      vocab_size=spec.vocab_size, mask_prob=mask_prob).total
                  for mode in timings}
    out = []
    for mode, t in timings.items():
        corrupt_ms = 1000 * statistics.median(t.corrupt_s) if t.corrupt_s else None
        if corrupt_ms is not None:
            rows.add("time", "timed-shape", mode, "corrupt", "median_corrupt_ms", corrupt_ms,
                     "ms")
        out.append([mode, f"{1000 * t.median_s:,.1f}", f"{1000 * min(t.step_s):,.1f} - "
                    f"{1000 * max(t.step_s):,.1f}",
                    f"{corrupt_ms:,.1f}" if corrupt_ms is not None else "-",
                    f"{tokens / t.median_s:,.0f}",
                    f"{paired_ratio(timings, mode, 'electra'):.2f}",
                    f"{paired_ratio(timings, mode, 'disc-only'):.2f}",
                    f"{step_flops[mode] * spec.batch / t.median_s / 1e9:.3g}",
                    measured.notes.get(mode, "")])
        rows.add("time", "timed-shape", mode, "step", "median_step_ms", 1000 * t.median_s, "ms")
        rows.add("time", "timed-shape", mode, "step", "min_step_ms", 1000 * min(t.step_s), "ms")
        rows.add("time", "timed-shape", mode, "step", "max_step_ms", 1000 * max(t.step_s), "ms")
        rows.add("time", "timed-shape", mode, "step", "tokens_per_s", tokens / t.median_s,
                 "tokens/s")
    fast, disc_only = timings["fast-electra"], timings["disc-only"]
    ratios = {"fast_joint": paired_ratio(timings, "fast-electra", "electra"),
              "fast_disc": paired_ratio(timings, "fast-electra", "disc-only"),
              "flop_fast_joint": step_flops["fast-electra"] / step_flops["electra"],
              "flop_fast_disc": step_flops["fast-electra"] / step_flops["disc-only"],
              "fast_corrupt_share": statistics.median(fast.corrupt_s) / fast.median_s,
              "disc_corrupt_share": statistics.median(disc_only.corrupt_s) / disc_only.median_s}
    if "peer" in timings:
        ratios["electra_peer"] = paired_ratio(timings, "electra", "peer")
    ratios.update(measured.breakdown)
    for key, value in ratios.items():
        seconds = key.endswith("_s")
        rows.add("time", "timed-shape", key, "step", "seconds" if seconds else "ratio", value,
                 "s" if seconds else "")
    peer = f"{ratios['electra_peer']:.2f}" if "peer" in timings else None
    return {
        "shape": spec.describe(), "reps": str(measured.reps),
        "steps_per_rep": str(measured.steps_per_rep), "warmup_steps": str(measured.warmup_steps),
        "threads": str(torch.get_num_threads()),
        "time_table": table(["mode", "median step (ms)", "range (ms)", "corrupt (ms)",
                             "tokens/s", "vs electra", "vs disc-only", "achieved GFLOP/s",
                             "note"], out),
        "fast_joint": f"{ratios['fast_joint']:.2f}", "fast_disc": f"{ratios['fast_disc']:.2f}",
        "flop_fast_joint": f"{ratios['flop_fast_joint']:.2f}",
        "flop_fast_disc": f"{ratios['flop_fast_disc']:.2f}",
        "electra_peer_headline": f", electra/peer {peer}" if peer else "",
        "electra_peer_ratio": f"; electra/peer = {peer}" if peer else "",
        "forward_ms": f"{1000 * ratios['forward_s']:,.1f}",
        "sampling_ms": f"{1000 * ratios['sampling_s']:,.1f}",
        "sampling_compiled_ms": f"{1000 * ratios['sampling_compiled_s']:,.1f}",
        "sampling_ratio": f"{ratios['sampling_s'] / ratios['forward_s']:.2f}",
        "sampling_compiled_ratio": f"{ratios['sampling_compiled_s'] / ratios['forward_s']:.2f}",
        "slots": f"{spec.batch * num_predictions(spec.seq_len, mask_prob):,}",
    }, ratios


# --------------------------------------------------------------------------------------------
# Targets


def targets_table(rows: Rows, compute: dict, memory: dict, timing: dict, spec: Spec) -> str:
    """One row per target: value, threshold, met, and where missed, by how much and why
    (templates/targets.yaml)."""
    texts = _load("targets.yaml")
    out = []

    def row(key: str, value: float, limit: float, **fill) -> None:
        fill = {"recipe": spec.recipe, "device": spec.device, "value": f"{value:.2f}", **fill}
        name = Template(texts[key]["name"]).substitute(fill)
        met = value <= limit
        why = "" if met else Template(texts[key]["why"]).substitute(fill)
        out.append([name, f"{value:.3f}", f"<= {limit:.2f}",
                    "met" if met else f"missed by {value - limit:.3f}", why])
        rows.add("targets", name, "-", "-", "value", value, "")
        rows.add("targets", name, "-", "-", "threshold", limit, "")

    for size in cm.PAPER_SHAPES:
        c = compute[size]
        limit = TARGETS[f"compute_{size}"]
        # fast/joint = (M + a) / (M + 3a), a = auxiliary forward, M = main step:
        # <= limit needs a / M >= (1 - limit) / (3 limit - 1)
        bound = Template(texts["bound"]).substitute(
            limit=f"{limit:.2f}", need=f"{(1 - limit) / (3 * limit - 1):.3f}")
        row("compute_paper", c["paper_acct"], limit, size=size, bound=bound,
            aux_over_main=f"{c['aux_over_main_paper']:.3f}", paper=f"{c['paper']:.2f}",
            offline=f"{c['offline_paper']:.2f}")
        row("compute_ours", c["ours"], limit, size=size, bound=bound,
            aux_over_main=f"{c['aux_over_main_ours']:.3f}")
    for size in cm.PAPER_SHAPES:
        m = memory[size]
        row("aux_memory_held", m["aux_held"], TARGETS["aux_memory"], size=size,
            memory=texts["memory"])
        row("aux_memory_peak", m["aux_peak"], TARGETS["aux_memory"], size=size,
            memory=texts["memory"], transient=f"{m['transient_over_main_activations']:.0%}")
    t = timing
    sampler = Template(texts["sampler"]).substitute(sampling_ms=f"{1000 * t['sampling_s']:,.1f}",
                                                    forward_ms=f"{1000 * t['forward_s']:,.1f}")
    if t["sampling_s"] > t["forward_s"]:
        sampler += texts["sampler_dominates"]
    row("time_fast_joint", t["fast_joint"], TARGETS["time_fast_joint"] * t["flop_fast_joint"],
        sampler=sampler, flop_ratio=f"{t['flop_fast_joint']:.2f}")
    row("time_fast_disc", t["fast_disc"], TARGETS["time_fast_disc"], sampler=sampler,
        generator_share=f"{t['flop_fast_disc'] - 1:.0%}",
        fast_corrupt_share=f"{t['fast_corrupt_share']:.0%}",
        disc_corrupt_share=f"{t['disc_corrupt_share']:.0%}")
    if "electra_peer" in t:
        row("time_electra_peer", t["electra_peer"], TARGETS["time_electra_peer"])
    for path, key in (("eager", "sampling_s"), ("torch.compile", "sampling_compiled_s")):
        row("sampling_over_forward", t[key] / t["forward_s"], TARGETS["sampling_over_forward"],
            path=path, sampling_ms=f"{1000 * t[key]:,.1f}",
            forward_ms=f"{1000 * t['forward_s']:,.1f}")
    return table(["target", "value", "threshold", "result", "why (where missed)"], out)
