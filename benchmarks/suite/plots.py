"""The report's three figures, drawn from its CSV rows (report_tables.Rows): compute per
sequence at the paper's shapes, memory (analytic auxiliary, measured growth per mode) and step
time."""

from __future__ import annotations

from pathlib import Path

from benchmarks.suite.cost_model import PAPER_SHAPES
from benchmarks.suite.report_tables import METHODS, Rows


def plot(out_prefix: Path, rows: Rows) -> list[Path]:
    """Writes OUT_PREFIX_flops.png, _memory.png and _step_time.png; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, suffix: str) -> Path:
        fig.tight_layout()
        path = out_prefix.with_name(out_prefix.name + suffix)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    paths = []
    # compute: stacked main + aux, per accounting and method
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, size in zip(axes, PAPER_SHAPES):
        labels, mains, auxes = [], [], []
        for acct in ("paper", "paper-accounting", "ours"):
            for mode, short, _ in METHODS:
                labels.append(f"{acct.replace('-accounting', ' acct.')}\n{short}")
                mains.append(rows.value(section="compute", case=f"paper-{size}", mode=mode,
                                        component="main", metric=f"gflops_{acct}"))
                auxes.append(rows.value(section="compute", case=f"paper-{size}", mode=mode,
                                        component="aux", metric=f"gflops_{acct}"))
        x = range(len(labels))
        ax.bar(x, mains, label="main")
        ax.bar(x, auxes, bottom=mains, label="auxiliary")
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_title(f"{size}: GFLOPs per sequence (512 tokens)")
        ax.legend()
    paths.append(save(fig, "_flops.png"))

    # memory: analytic aux (joint vs fast) and measured growth per mode
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    labels, heights = [], []
    for size in PAPER_SHAPES:
        for mode, short, _ in METHODS:
            labels.append(f"{size}\n{short}")
            heights.append(rows.value(section="memory", case=f"paper-{size}", mode=mode,
                                      component="aux", metric="analytic_total"))
    ax.bar(range(len(labels)), heights, color="tab:orange")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_title("auxiliary model memory, analytic (GB, bf16)")
    ax = axes[1]
    measured = [r for r in rows.rows if r["section"] == "memory" and r["case"] == "timed-shape"
                and r["metric"] == "measured_growth"]
    ax.bar([r["mode"] for r in measured], [r["value"] for r in measured], color="tab:green")
    ax.set_title("measured memory growth per mode (MiB)")
    paths.append(save(fig, "_memory.png"))

    # time
    fig, ax = plt.subplots(figsize=(7, 4.2))
    timed = [r for r in rows.rows if r["section"] == "time" and r["metric"] == "median_step_ms"]
    modes = [r["mode"] for r in timed]
    med = [r["value"] for r in timed]
    lo = [m - rows.value(section="time", mode=mode, metric="min_step_ms")
          for m, mode in zip(med, modes)]
    hi = [rows.value(section="time", mode=mode, metric="max_step_ms") - m
          for m, mode in zip(med, modes)]
    ax.bar(modes, med, yerr=[lo, hi], capsize=4, color="tab:blue", label="step")
    corrupt = {r["mode"]: r["value"] for r in rows.rows if r["metric"] == "median_corrupt_ms"}
    ax.bar(modes, [corrupt.get(m, 0.0) for m in modes], color="tab:orange",
           label="of which corrupt (frozen generator + sampling, or uniform draw)")
    ax.set_ylabel("median step time (ms), bars: min-max")
    ax.set_title("step time, measured side by side")
    ax.legend(fontsize=8)
    paths.append(save(fig, "_step_time.png"))
    return paths
