"""What a run stuck on the replaced-token-detection plateau does to its encoder, step by step.

    .venv/bin/python benchmarks/plateau_anatomy.py [--corpus techdocs --vocab 8000]

Needs the plateau map's prepared data and generator for that corpus and vocabulary
(benchmarks/plateau_map.py prepares them under .plateau/). Two fast-electra runs of the 2 x 128
discriminator, the same in everything but the head's initial output bias: `zero` (Hugging Face's
default, the framework's before issue 20) and `prior` (model.head_bias_init=prior, the default
now). Each runs 3,000 steps as in the map (the demo recipe, the paper's schedule from T0 = 2 for
both, so only the bias differs) and keeps a checkpoint at steps 10, 20, 30, 50, 100, 200, 500,
1,000 and 3,000. For every checkpoint, on 64 held-out sequences (the original text):

- logit mean / std: the head's output over real tokens;
- per encoder output (embeddings, layer 1, layer 2): the mean cosine similarity between the
  representations of different tokens (1 = every position maps to the same vector) and the share
  of their squared norm in the mean vector common to all of them;
- LayerNorm gains (mean), the norm of the attention-output and feed-forward matrices;
- from Adam's moments: the mean |m| / (sqrt(v) + eps) over the encoder's weights, i.e. the size
  of the update per unit of learning rate, and the global gradient norm the run logged.

Written to benchmarks/results/plateau_anatomy.md, the machine named.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machine import cpu_name  # noqa: E402

WORK = REPO / ".plateau"
RESULTS = REPO / "benchmarks" / "results"
KEEP = (10, 20, 30, 50, 100, 200, 500, 1000, 3000)
SHAPE = ["model.hidden_size=128", "model.num_heads=2", "model.intermediate_size=512"]
PAPER = ["temperature.schedule=exponential", "temperature.t0=2.0", "temperature.tau=0.1"]


def train(name: str, bias: str, paths: dict[str, Path], steps: int) -> Path:
    """A run that checkpoints every 10 steps and keeps KEEP (the others are deleted as it goes:
    checkpoint.keep_last would drop the early ones)."""
    run_dir = WORK / "anatomy" / name
    if (run_dir / "checkpoints" / f"step{steps:09d}").is_dir():
        return run_dir
    cmd = [sys.executable, "-m", "fast_electra_ds", "pretrain", "--config", "demo",
           "mode=fast-electra", f"run_dir={run_dir}", f"data.paths={paths['data']}",
           f"generator.path={paths['generator']}", f"eval.judge={paths['generator']}",
           f"train.steps={steps}", "eval.every=500", "device=cpu", "checkpoint.resume=none",
           "checkpoint.save_every=10", "checkpoint.keep_last=1000",
           "logging.progress_bar=false", f"model.head_bias_init={bias}", *SHAPE, *PAPER]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    # prune checkpoints not in KEEP while it runs (each is ~8 MB; 300 of them would be 2.4 GB)
    while proc.poll() is None:
        _prune(run_dir)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    if proc.returncode != 0:
        raise SystemExit(f"{name}: pretrain failed\n{proc.stderr.read()[-3000:]}")
    _prune(run_dir)
    return run_dir


def _prune(run_dir: Path) -> None:
    import shutil

    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return
    tags = sorted(p for p in folder.iterdir() if p.name.startswith("step"))
    for p in tags[:-1]:  # never the newest: it may be the one being written or committed
        if int(p.name[4:]) not in KEEP:
            shutil.rmtree(p, ignore_errors=True)


def held_out_batch(data: Path, info, num: int = 64):
    from fast_electra_ds.data.loader import open_datasets

    datasets, _ = open_datasets([str(data)], "valid")
    seqs = [np.asarray(datasets[0][i], dtype=np.int64) for i in range(num)]
    length = max(len(s) for s in seqs)
    ids = torch.full((num, length), info.special_token_ids["pad"], dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.from_numpy(s)
    mask = (ids != info.special_token_ids["pad"]).long()
    sep = (ids == info.special_token_ids["sep"]).long()
    types = ((sep.cumsum(1) - sep) > 0).long() * mask  # 1 after the first [SEP]
    return ids, mask, types


@torch.no_grad()
def measure(run_dir: Path, step: int, batch, info) -> dict:
    from fast_electra_ds.config import load_config
    from fast_electra_ds.method.models import build_discriminator

    cfg = load_config(str(run_dir / "config.yaml"))
    model = build_discriminator(cfg.model, vocab_size=info.vocab_size,
                                pad_id=info.special_token_ids["pad"]).eval()
    tag = run_dir / "checkpoints" / f"step{step:09d}" / "mp_rank_00_model_states.pt"
    saved = torch.load(tag, map_location="cpu", weights_only=False)  # ZeRO-0: one file
    prefix = "discriminator."
    model.load_state_dict({k[len(prefix):]: v for k, v in saved["module"].items()
                           if k.startswith(prefix)})
    ids, mask, types = batch
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types,
                output_hidden_states=True)
    real = mask.bool()
    row = {"step": step, "logit_mean": float(out.logits[real].mean()),
           "logit_std": float(out.logits[real].std())}
    for i, hidden in enumerate(out.hidden_states):
        h = hidden[real]  # [N, H]
        unit = torch.nn.functional.normalize(h, dim=-1)
        mean = h.mean(0)
        row[f"cos_{i}"] = float((unit @ unit.T).mean())
        row[f"common_{i}"] = float(mean.pow(2).sum() * len(h) / h.pow(2).sum())
    names = dict(model.named_parameters())
    row["ln_gain"] = float(torch.cat([p for n, p in names.items()
                                      if n.endswith("LayerNorm.weight")]).mean())
    row["matrix_norm"] = float(np.mean([p.norm() for n, p in names.items()
                                        if "encoder" in n and n.endswith("dense.weight")]))
    state = saved["optimizer"]["state"]
    eps = saved["optimizer"]["param_groups"][0]["eps"]
    ratios = [(s["exp_avg"].abs() / (s["exp_avg_sq"].sqrt() + eps)).mean()
              for s in state.values() if s["exp_avg"].dim() == 2]
    row["adam_update_per_lr"] = float(torch.stack(ratios).mean())
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="techdocs")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args(argv)
    base = WORK / f"{args.corpus}-{args.vocab}"
    paths = {"data": base / "data", "generator": base / "mlm" / "generator"}
    if not paths["generator"].is_dir():
        print(f"{paths['generator']} is missing: run benchmarks/plateau_map.py first",
              file=sys.stderr)
        return 2
    from fast_electra_ds.data.loader import open_datasets

    _, info = open_datasets([str(paths["data"])], "train")
    batch = held_out_batch(paths["data"], info)
    tables = {}
    for bias in ("zero", "prior"):
        run_dir = train(bias, bias, paths, args.steps)
        logged = {}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r["split"] == "train":
                logged[r["step"]] = r
        rows = [measure(run_dir, s, batch, info) for s in KEEP if s <= args.steps]
        for row in rows:
            near = min(logged, key=lambda s: abs(s - row["step"]))
            row["grad_norm"] = logged[near]["grad_norm"]
            row["grad_norm_step"] = near
        evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text()
                 .splitlines() if json.loads(line)["split"] == "eval"]
        tables[bias] = (rows, evals[-1]["auc_maskable"])
    write_report(args, tables)
    return 0


def write_report(args, tables) -> None:
    lines = [
        "# Anatomy of a run stuck on the plateau",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} given to "
        f"this script, torch threads {torch.get_num_threads()}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}.",
        f"Command: `.venv/bin/python benchmarks/plateau_anatomy.py --corpus {args.corpus} "
        f"--vocab {args.vocab}` (module doc: what is measured).",
        "",
        f"fast-electra, discriminator 2 x 128, {args.corpus} with WordPiece {args.vocab:,}, the "
        f"demo recipe, {args.steps:,} steps, the paper's schedule (T0 = 2, tau = 0.1); the two "
        "runs differ only in the head's initial output bias. Measured on 64 held-out sequences "
        "of original text. cos: mean cosine similarity between the representations of different "
        "tokens; common: share of their squared norm in the vector common to all tokens "
        "(0 at random init would mean no shared direction, 1 that every token is the same). "
        "Grad norm: the logged 100-step window nearest the checkpoint (the first window ends at "
        "step 100).",
    ]
    for bias, (rows, auc) in tables.items():
        lines += ["", f"## head bias {bias}: held-out AUC (maskable) at the end {auc:.3f}", "",
                  "| step | logit mean | logit std | cos emb / L1 / L2 | common emb / L1 / L2 | "
                  "LN gain | FFN/attn matrix norm | Adam update / lr | grad norm |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| {r['step']:,} | {r['logit_mean']:.3f} | {r['logit_std']:.4f} | "
                f"{r['cos_0']:.3f} / {r['cos_1']:.3f} / {r['cos_2']:.3f} | "
                f"{r['common_0']:.3f} / {r['common_1']:.3f} / {r['common_2']:.3f} | "
                f"{r['ln_gain']:.3f} | {r['matrix_norm']:.2f} | {r['adam_update_per_lr']:.3f} | "
                f"{r['grad_norm']:.4f} (step {r['grad_norm_step']}) |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "plateau_anatomy.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'plateau_anatomy.md'}")


if __name__ == "__main__":
    sys.exit(main())
