"""Does pretraining help downstream at this scale? Encoders of one shape, fine-tuned with the
project's own `finetune` on a task built from the development corpora.

    .venv/bin/python benchmarks/pretraining_value.py [--corpora kjv,techdocs] [--vocab 8000]

Needs the plateau map's runs (benchmarks/plateau_map.py, variants `defaults` and `before`) for
the corpus, vocabulary and the 2 x 128 discriminator. Encoders, all 2 x 128 (embeddings 32):

  random init       the discriminator as initialized (seed 1234), never trained: the floor
  masked LM         mode=mlm with that shape (2 x 128, feed-forward 512), 3,000 steps of the
                    demo recipe, as the discriminators: the reference pretraining objective
  fast-electra      the map's `defaults` run (3,000 steps)
  electra           the map's `defaults` run (3,000 steps)
  fast-electra, stuck   the map's `before` run, where it stayed on the plateau

The task (benchmarks/downstream_task.py, fixed before any encoder was fine-tuned): does line B
follow line A; dev pairs from documents held out of pretraining. Two training sizes: 4,000
examples (3 epochs) and their first 500 (10 epochs); lr 3e-4 (ELECTRA-Small's), layer-wise decay
0.8, batch 32, seeds 1, 2, 3, median reported. Written to benchmarks/results/pretraining_value.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import downstream_task  # noqa: E402
from benchmarks.machine import cpu_name  # noqa: E402
from benchmarks.plateau_map import RESULTS, WORK, corpus_file, wait_for_cpu  # noqa: E402

SIZES = ((4000, 3), (500, 10))  # (train examples, epochs)
SEEDS = (1, 2, 3)
LR = 3e-4
MLM_SHAPE = ["generator.num_layers=2", "generator.hidden_size=128", "generator.num_heads=2",
             "generator.intermediate_size=512"]


def _fe(*args: str) -> None:
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    done = subprocess.run([sys.executable, "-m", "fast_electra_ds", *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        print(done.stdout[-4000:], file=sys.stderr)
        raise SystemExit(f"failed: fast-electra {' '.join(args)}")


def encoders(corpus: str, vocab: int, steps: int) -> dict[str, Path]:
    """name -> a HF model folder with the data's tokenizer."""
    base = WORK / f"{corpus}-{vocab}"
    out = WORK / "value" / f"{corpus}-{vocab}"
    found: dict[str, Path] = {}
    for name, variant, method in (("fast-electra", "defaults", "fast-electra"),
                                  ("electra", "defaults", "electra"),
                                  ("fast-electra, stuck", "before", "fast-electra")):
        run = WORK / "runs" / variant / f"{corpus}-{vocab}-128-{method}"
        if not (run / "checkpoints").is_dir():
            raise SystemExit(f"{run} is missing: run benchmarks/plateau_map.py --variant "
                             f"{variant} first")
        export = out / f"{variant}-{method}"
        if not (export / "discriminator").is_dir():
            _fe("export", "--run", str(run), "--output", str(export))
        found[name] = export / "discriminator"
    mlm = out / "mlm"
    if not (mlm / "generator").is_dir():
        _fe("pretrain", "--config", "demo", "mode=mlm", f"run_dir={mlm}",
            f"data.paths={base / 'data'}", "device=cpu", "checkpoint.resume=none",
            f"train.steps={steps}", "eval.every=0", "logging.progress_bar=false", *MLM_SHAPE)
    found["masked LM"] = mlm / "generator"
    random_dir = out / "random"
    if not random_dir.is_dir():
        _random_init(WORK / "runs" / "defaults" / f"{corpus}-{vocab}-128-fast-electra",
                     random_dir)
    found["random init"] = random_dir
    return found


def _random_init(run: Path, out: Path) -> None:
    """The discriminator of `run`'s config as initialized (the run's seed), never trained."""
    from transformers import AutoTokenizer

    from fast_electra_ds.config import load_config
    from fast_electra_ds.data.loader import open_datasets
    from fast_electra_ds.method.models import build_discriminator

    cfg = load_config(str(run / "config.yaml"))
    _, info = open_datasets(cfg.data.paths, "train")
    torch.manual_seed(cfg.seed)
    model = build_discriminator(cfg.model, vocab_size=info.vocab_size,
                                pad_id=info.special_token_ids["pad"],
                                replaced_share=cfg.masking.mask_prob)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(info.tokenizer).save_pretrained(out)


def task_folders(corpus: str) -> dict[int, Path]:
    """Train-size -> the task folder (the small one: the first examples of the large one)."""
    base = WORK / "value" / "tasks" / corpus
    full = base / f"train{SIZES[0][0]}"
    if not (full / "dev.tsv").is_file():
        downstream_task.build(str(corpus_file(corpus)), full, num_train=SIZES[0][0],
                              num_dev=1000)
    folders = {SIZES[0][0]: full}
    for size, _ in SIZES[1:]:
        small = base / f"train{size}"
        if not (small / "dev.tsv").is_file():
            small.mkdir(parents=True, exist_ok=True)
            lines = (full / "train.tsv").read_text().splitlines()
            (small / "train.tsv").write_text("\n".join(lines[:size + 1]) + "\n")
            (small / "dev.tsv").write_text((full / "dev.tsv").read_text())
        folders[size] = small
    return folders


def finetune_once(model: Path, folder: Path, epochs: int, out: Path,
                  seeds: tuple[int, ...] = SEEDS) -> dict:
    """The results of fine-tuning `model` on the task in `folder` with the yardstick's settings
    (out/results.json, reused when it is there)."""
    from fast_electra_ds.downstream.finetune import FinetuneConfig, finetune

    results_file = out / "results.json"
    if not results_file.is_file():
        wait_for_cpu()
        finetune(FinetuneConfig(model=str(model), task="mrpc", data_dir=str(folder),
                                seeds=seeds, epochs=epochs, lr=LR, output=str(out),
                                device="cpu"), log=lambda m: None)
    return json.loads(results_file.read_text())


def finetune_all(corpus: str, vocab: int, models: dict[str, Path]) -> list[dict]:
    rows = []
    for size, epochs in SIZES:
        folder = task_folders(corpus)[size]
        for name, model in models.items():
            out = WORK / "value" / "finetune" / f"{corpus}-{vocab}" / str(size) / \
                name.replace(", ", "-").replace(" ", "-")
            results = finetune_once(model, folder, epochs, out)
            rows.append({"corpus": corpus, "vocab": vocab, "train": size, "encoder": name,
                         "median": results["median"]["accuracy"],
                         "seeds": [results["per_seed"][str(s)]["accuracy"] for s in SEEDS]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", default="kjv,techdocs")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=3000, help="the masked LM's steps")
    args = parser.parse_args(argv)
    rows = []
    for corpus in args.corpora.split(","):
        rows += finetune_all(corpus, args.vocab, encoders(corpus, args.vocab, args.steps))
    lines = [
        "# Does pretraining help downstream at this scale?",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} given to "
        f"this script, torch threads {torch.get_num_threads()}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}.",
        f"Command: `.venv/bin/python benchmarks/pretraining_value.py --corpora {args.corpora} "
        f"--vocab {args.vocab}` (module doc: the encoders, the task and the fine-tuning).",
        "",
        f"Task: does line B follow line A (balanced; dev: 1,000 pairs from documents held out of "
        f"pretraining), fine-tuned with `fast-electra finetune` (lr {LR:g}, layer decay 0.8, "
        f"batch 32); dev accuracy, median of seeds {', '.join(map(str, SEEDS))} (each seed in "
        f"brackets). Every encoder is 2 x 128 with embeddings 32, vocabulary {args.vocab:,}; "
        f"the pretrained ones saw 3,000 steps of 32 x 64 tokens.",
        "",
        "| corpus | train examples | encoder | dev accuracy (median) | seeds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['corpus']} | {r['train']:,} | {r['encoder']} | {r['median']:.3f} | "
                     + " / ".join(f"{a:.3f}" for a in r["seeds"]) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pretraining_value.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
