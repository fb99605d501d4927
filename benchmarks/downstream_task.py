"""A downstream yardstick built from a development corpus: "does B follow A?".

    python benchmarks/downstream_task.py --corpus corpus/kjv.txt --output .plateau/tasks/kjv

Each example is a pair of lines of the corpus (verses of the Bible, paragraphs of the manuals):
label 1 when B is the line right after A in the same document, 0 when B is a line of another
document. A bag of words gets part of the way (another document is often about something else);
the rest needs what a pretrained encoder is for - which sentences fit together. The task was
fixed before any encoder was fine-tuned on it (issue 20 asks for a yardstick that can see
pretraining, not one tuned until it does), with these choices:

- dev examples come from the documents `prepare-data --valid-fraction 0.05` (seed 1234) holds
  out of pretraining (`fast_electra_ds.data.prepare.in_valid`), train examples from the others,
  so no dev pair was seen in pretraining;
- classes are balanced; a line is cut to its first MAX_WORDS words; lines with fewer than
  MIN_WORDS words are not used (headings and one-word lines say nothing about coherence);
- the negative B is drawn from another document of the same split, uniformly.

Written in the GLUE MRPC layout (train.tsv, dev.tsv with `Quality`, `#1 String`, `#2 String`),
so that `fast-electra finetune --task mrpc --data-dir DIR` reads it as it is.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from fast_electra_ds.data.corpus import Corpus
from fast_electra_ds.data.prepare import in_valid

MAX_WORDS = 40
MIN_WORDS = 4
PREPARE_SEED = 1234  # prepare-data's default --seed: the split the plateau map's data use
PREPARE_VALID_FRACTION = 0.05
HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"


def _clip(line: str) -> str:
    return " ".join(line.replace("\t", " ").split()[:MAX_WORDS])


def _pairs(documents: list[list[str]], num: int, rng: random.Random) -> list[tuple[int, str, str]]:
    """`num` balanced (label, A, B) examples from `documents` (each a list of usable lines)."""
    adjacent = [(d, i) for d, lines in enumerate(documents) for i in range(len(lines) - 1)]
    if len(adjacent) < num // 2 or len(documents) < 2:
        raise SystemExit(f"error: {len(adjacent)} adjacent line pairs in {len(documents)} "
                         f"documents; {num // 2} are needed: ask for fewer examples")
    out = []
    for k, (d, i) in enumerate(rng.sample(adjacent, num)):
        a = documents[d][i]
        if k % 2 == 0:
            out.append((1, a, documents[d][i + 1]))
        else:
            other = rng.randrange(len(documents) - 1)
            other += other >= d  # any document but d
            out.append((0, a, rng.choice(documents[other])))
    rng.shuffle(out)
    return out


def build(corpus: str, output: Path, *, num_train: int, num_dev: int, seed: int = 0) -> dict:
    """Write OUTPUT/train.tsv and OUTPUT/dev.tsv; returns counts."""
    splits: dict[str, list[list[str]]] = {"train": [], "dev": []}
    for index, lines in enumerate(Corpus([corpus]).documents()):
        usable = [_clip(line) for line in lines if len(line.split()) >= MIN_WORDS]
        if len(usable) >= 2:
            split = "dev" if in_valid(PREPARE_SEED, index, PREPARE_VALID_FRACTION) else "train"
            splits[split].append(usable)
    rng = random.Random(seed)
    output.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, num in (("train", num_train), ("dev", num_dev)):
        examples = _pairs(splits[split], num, rng)
        rows = [HEADER] + [f"{label}\t{2 * k}\t{2 * k + 1}\t{a}\t{b}"
                           for k, (label, a, b) in enumerate(examples)]
        (output / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        counts[split] = len(examples)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="a plain-text corpus (documents "
                        "separated by blank lines)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-dev", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = build(args.corpus, args.output, num_train=args.num_train, num_dev=args.num_dev,
                   seed=args.seed)
    print(f"{args.output}: {counts['train']} train, {counts['dev']} dev examples")


if __name__ == "__main__":
    main()
