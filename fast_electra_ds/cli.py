"""`fast-electra` (also `python -m fast_electra_ds`): one subcommand per pipeline stage.

    train-tokenizer  text -> WordPiece tokenizer folder
    prepare-data     text -> packed token ids in megatron-core indexed datasets
    config           show a resolved run config, or list every key
    pretrain         the training run (fast-electra, electra or mlm), also under `deepspeed`
    compare          runs side by side (step time, memory, held-out metrics), learning curves
    evaluate         finished runs / exported discriminators scored on one judged set
    export           a run's newest committed checkpoint -> Hugging Face model folders
    finetune         GLUE fine-tuning of a HF model folder (ELECTRA recipe, median of seeds)

Heavy imports (torch, deepspeed, transformers) happen inside the handlers, so `--help` is quick.
A `UserError` is printed as `error: ...` and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from fast_electra_ds.errors import UserError


def _train_tokenizer(args: argparse.Namespace) -> None:
    from fast_electra_ds.data.tokenizer import train_tokenizer

    out = train_tokenizer(args.input, vocab_size=args.vocab_size, output=args.output,
                          lowercase=not args.cased, min_frequency=args.min_frequency,
                          overwrite=args.overwrite)
    print(f"tokenizer written to {out}")


def _prepare_data(args: argparse.Namespace) -> None:
    from fast_electra_ds.data.prepare import prepare_data

    max_seq_len = None
    if args.config:
        from fast_electra_ds.config import load_config

        max_seq_len = load_config(args.config).model.max_position_embeddings
    manifest = prepare_data(args.input, tokenizer=args.tokenizer, seq_len=args.seq_len,
                            output=args.output, valid_fraction=args.valid_fraction,
                            num_proc=args.num_proc, text_key=args.text_key, split=args.split,
                            errors=args.errors,
                            overwrite=args.overwrite, seed=args.seed, max_seq_len=max_seq_len)
    for split, stats in manifest["splits"].items():
        print(f"{split}: {stats['num_sequences']} sequences, {stats['num_tokens']} tokens, "
              f"{stats['num_documents']} documents")
    print(f"held out for valid: {manifest['valid_held_out']}")
    print(f"dataset written to {args.output}")


def _config(args: argparse.Namespace) -> None:
    from fast_electra_ds.config import describe, load_config

    if args.list:
        print(describe())
        return
    import yaml

    from fast_electra_ds.method.modes import validate_config

    cfg = load_config(args.config, args.overrides)
    validate_config(cfg, check_files=False)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")


def _pretrain(args: argparse.Namespace) -> None:
    from fast_electra_ds.config import load_config
    from fast_electra_ds.training.loop import pretrain

    pretrain(load_config(args.config, args.overrides))  # checks every input before any work


def _compare(args: argparse.Namespace) -> None:
    from fast_electra_ds.downstream.compare import compare

    print(compare(args.runs, plot=args.plot))


def _evaluate(args: argparse.Namespace) -> None:
    from fast_electra_ds.downstream.compare import (EVALUATE_COLUMNS, describe_set,
                                                    evaluate_models, table)
    from fast_electra_ds.training.plateau import ADVICE

    eval_set, rows = evaluate_models(
        args.models, judge=args.judge, data=[args.data], num_sequences=args.num_sequences,
        seed=args.seed, mask_prob=args.mask_prob, masking_style=args.masking_style,
        batch_size=args.batch_size, device=args.device,
        logger=lambda m: print(m, file=sys.stderr))
    text = (f"Held-out: {describe_set(eval_set.record())}.\n\n"
            + table(rows, EVALUATE_COLUMNS))
    stuck = [row["name"] for row in rows if row["plateau"] == "yes"]
    if stuck:
        text += (f"\n\nOn the replaced-token-detection plateau (RTD loss at the binary entropy "
                 f"of the replaced share, replaced recall under 1%): {', '.join(stuck)}. These "
                 f"discriminators predict the base rate everywhere and learned nothing; "
                 f"{ADVICE}.")
    print(text)
    if args.output:
        Path(args.output).write_text(json.dumps({"eval_set": eval_set.record(), "rows": rows},
                                                indent=2) + "\n")


def _export(args: argparse.Namespace) -> None:
    from fast_electra_ds.downstream.export import export

    info = export(args.run, args.output, overwrite=args.overwrite)
    print(f"exported {info['tag']} (step {info['step']}, mode={info['mode']}, "
          f"ZeRO-{info['zero_stage']}, {info['world_size']} rank(s)) of {args.run}: "
          + ", ".join(f"{args.output}/{f}" for f in info["folders"]))


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _finetune(args: argparse.Namespace) -> None:
    from fast_electra_ds.downstream.finetune import FinetuneConfig, finetune

    finetune(FinetuneConfig(model=args.model, task=args.task, data_dir=args.data_dir,
                            seeds=args.seeds, epochs=args.epochs, lr=args.lr,
                            batch_size=args.batch_size, max_seq_len=args.max_seq_len,
                            layer_decay=args.layer_decay, weight_decay=args.weight_decay,
                            output=args.output, device=args.device),
             overwrite=args.overwrite)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fast-electra",
        description="ELECTRA-style pretraining with a frozen generator (Fast-ELECTRA) on "
                    "DeepSpeed.")
    # The DeepSpeed launcher runs `python -u -m fast_electra_ds --local_rank=N <args>`: accept
    # it here (ranks read LOCAL_RANK from the environment, which the launcher also sets).
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train-tokenizer", help="train a WordPiece tokenizer on text files",
                       description="Train a WordPiece tokenizer (HF tokenizers) and save it as a "
                                   "HF tokenizer folder with vocab.txt.")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE",
                   help="plain-text files (one sentence or line per line)")
    p.add_argument("--vocab-size", type=int, required=True, metavar="N")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--min-frequency", type=int, default=2, metavar="N",
                   help="least count for a merge to enter the vocabulary (default 2)")
    p.add_argument("--cased", action="store_true", help="keep case (default: lowercase)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    p.set_defaults(func=_train_tokenizer)

    p = sub.add_parser("prepare-data", help="tokenize and pack a corpus into indexed datasets",
                       description="Read text, JSON lines or parquet files, a dataset saved "
                                   "with save_to_disk, a folder of parquet / JSON shards, or a "
                                   "hub dataset (streamed) through `datasets`, tokenize, pack "
                                   "into [CLS] A [SEP] B [SEP] examples from one document each, "
                                   "and write megatron-core indexed datasets (train and valid "
                                   "splits) plus manifest.json into OUTPUT.")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE_GLOB_DIR_OR_HUB_ID",
                   help="text / .jsonl / .json / .parquet files or globs, save_to_disk folders, "
                        "shard folders, or hub dataset ids (org/name)")
    p.add_argument("--tokenizer", required=True, metavar="DIR_OR_HUB_ID")
    p.add_argument("--seq-len", type=int, required=True, metavar="N")
    p.add_argument("--output", required=True, metavar="PREFIX",
                   help="dataset directory to create (holds train.bin/.idx, valid.bin/.idx, "
                        "manifest.json)")
    p.add_argument("--valid-fraction", type=float, default=0.01, metavar="F",
                   help="share of documents held out for validation (default 0.01)")
    p.add_argument("--num-proc", type=int, default=1, metavar="N",
                   help="tokenizer processes (default 1)")
    p.add_argument("--text-key", default="text", metavar="KEY",
                   help="field holding the text in JSON lines / parquet / datasets (default: "
                        "text)")
    p.add_argument("--split", default="train", metavar="SPLIT",
                   help="split of a hub dataset or a saved DatasetDict (default: train)")
    p.add_argument("--errors", choices=("strict", "skip"), default="strict",
                   help="on a line that is not UTF-8: stop (strict, default) or skip it and "
                        "report the count")
    p.add_argument("--seed", type=int, default=1234, help="seed of the train/valid split")
    p.add_argument("--config", metavar="RECIPE",
                   help="check --seq-len against this recipe's model position limit")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.set_defaults(func=_prepare_data)

    p = sub.add_parser("config", help="print a resolved run config, or list every key",
                       description="Print the config a recipe plus overrides resolves to.")
    p.add_argument("--config", default=None, metavar="RECIPE",
                   help="bundled recipe name or YAML path")
    p.add_argument("--list", action="store_true", help="list every key, its default and doc")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_config)

    p = sub.add_parser("pretrain", help="pretrain (mode=fast-electra, electra or mlm)",
                       description="Run pretraining. Works as one process and under the "
                                   "DeepSpeed launcher.")
    p.add_argument("--config", required=True, metavar="RECIPE",
                   help="bundled recipe name (tiny, small, base, large) or YAML path")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. mode=electra optim.lr=1e-4")
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("compare", help="table of finished runs side by side",
                       description="Step time, throughput, peak memory and held-out "
                                   "discriminator metrics of runs, from their metrics.jsonl.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="also write the learning curves there: held-out AUC against training "
                        "steps, seconds and FLOPs, for the runs scored on the first run's "
                        "evaluation set")
    p.set_defaults(func=_compare)

    p = sub.add_parser("evaluate", help="score discriminators on one judged evaluation set",
                       description="Build the evaluation set of a judge (a fixed masked LM "
                                   "whose samples at T = 1 replace the masked tokens of the "
                                   "data's valid split) and score each MODEL on exactly those "
                                   "tokens: RTD loss, accuracy on replaced and original tokens, "
                                   "ROC AUC over all real tokens and over the selected "
                                   "positions. One table. With the defaults below, the set is "
                                   "the one a run with eval.judge=GEN and default eval.* uses.")
    p.add_argument("models", nargs="+", metavar="RUN_OR_EXPORT",
                   help="run directories (newest committed checkpoint), export folders or HF "
                        "ElectraForPreTraining folders")
    p.add_argument("--judge", required=True, metavar="GEN",
                   help="a HF masked-LM folder or hub id with the data's tokenizer")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="a prepared dataset (its valid split is evaluated)")
    p.add_argument("--num-sequences", type=int, default=1024, metavar="N",
                   help="valid sequences in the set (default 1024, as eval.num_sequences)")
    p.add_argument("--seed", type=int, default=0, help="as eval.seed (default 0)")
    p.add_argument("--mask-prob", type=float, default=0.15, metavar="P",
                   help="as masking.mask_prob (default 0.15)")
    p.add_argument("--masking-style", choices=("electra", "bert"), default="electra",
                   help="as masking.style (default electra)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--output", default=None, metavar="JSON",
                   help="also write the set's description and the rows there")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("export", help="a run's newest committed checkpoint -> HF model folders",
                       description="Consolidate the newest committed checkpoint of a run (any "
                                   "ZeRO stage, any number of ranks; on CPU) and write "
                                   "OUTPUT/discriminator (ElectraForPreTraining) and, for "
                                   "mode=electra/mlm, OUTPUT/generator (ElectraForMaskedLM), "
                                   "each with the data's tokenizer.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a pretraining run_dir")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.set_defaults(func=_export)

    from fast_electra_ds.downstream.glue import TASKS

    p = sub.add_parser("finetune", help="GLUE fine-tuning (ELECTRA recipe, several seeds)",
                       description="Fine-tune a HF model folder on a GLUE task, from its local "
                                   "TSV files (--data-dir) or else from the hub dataset "
                                   "nyu-mll/glue through `datasets`, with AdamW, layer-wise LR "
                                   "decay and linear warmup/decay, once per seed; writes "
                                   "results.json with each seed's dev metrics and their median.")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="HF model folder with its tokenizer (e.g. EXPORT/discriminator)")
    p.add_argument("--task", required=True, metavar="TASK",
                   help=f"one of {', '.join(TASKS)}")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="the task's GLUE folder (train.tsv, dev.tsv or dev_matched.tsv) or the "
                        "GLUE root; default: the hub dataset nyu-mll/glue (config TASK, dev = "
                        "validation, MNLI's validation_matched), downloaded once into the "
                        "datasets cache; HF_DATASETS_OFFLINE=1 reads that cache without network")
    p.add_argument("--seeds", type=_seed_list, default=(1, 2, 3), metavar="1,2,3",
                   help="one run per seed; the median is reported (default 1,2,3)")
    p.add_argument("--epochs", type=float, default=None, metavar="N",
                   help="default: 10 for rte and stsb, 3 for the others (ELECTRA)")
    p.add_argument("--lr", type=float, default=1e-4, metavar="X",
                   help="peak learning rate (default 1e-4, ELECTRA-Base; Small 3e-4, Large 5e-5)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N")
    p.add_argument("--max-seq-len", type=int, default=128, metavar="N")
    p.add_argument("--layer-decay", type=float, default=0.8, metavar="X",
                   help="layer-wise LR decay (default 0.8; ELECTRA-Large 0.9)")
    p.add_argument("--weight-decay", type=float, default=0.01, metavar="X")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="where results.json goes (default MODEL/../glue/TASK)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results.json")
    p.set_defaults(func=_finetune)
    return parser


def run_rank(recipe: str, settings: Sequence[str] = (), argv: Sequence[str] | None = None) -> int:
    """The Python side of a launch script (training/launch.py): `pretrain` with the script's
    recipe and settings, and the environment's and the command line's overrides."""
    from fast_electra_ds.training.launch import rank_argv

    return main(rank_argv(recipe, settings, sys.argv[1:] if argv is None else argv))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
