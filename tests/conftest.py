"""Shared fixtures: a slice of the bundled corpus, a tokenizer trained on it, and a dataset;
and helpers that compute, independently of prepare-data, what a dataset must hold.

The data fixtures are session-scoped and built once (a few seconds in all); treat them as
read-only: a test that
modifies a dataset copies it first (`copy_dataset`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
KJV = REPO_ROOT / "corpus" / "kjv.txt"
TINY_CORPUS_LINES = 3000
TINY_VOCAB_SIZE = 2000
TINY_SEQ_LEN = 64
TINY_VALID_FRACTION = 0.05



def pytest_configure(config):
    """Under pytest-xdist (`make test` runs 2 workers on 2 cores): one thread per worker and per
    process it starts. Two workers of 2 OpenMP threads each on 2 cores spin against each other
    and slow 3-10x. Bit-for-bit tests set their own thread count (test_golden)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# The test files that take longest, longest first (seconds of one xdist worker under `make test`,
# measured 2026-12-06): the rest follow in name order. `make test` hands files to its two
# workers in collection order (--no-loadscope-reorder), so that the long ones start first and
# the short ones fill the gaps at the end: in name order one worker once sat idle for 34 s
# while the other ran the last long file.
LONGEST_FIRST = ("test_faults.py", "test_gpu_check.py", "test_bench.py", "test_launch.py",
                 "test_kernels_sampler.py", "test_compile.py", "test_kernel_compile.py",
                 "test_prepare_data.py", "test_budget.py", "test_fused_training.py",
                 "test_pretrain.py", "test_golden.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: name order after


def text_documents(path: Path) -> list[list[str]]:
    """Documents of a plain-text file, read without `datasets`: runs of non-blank lines."""
    docs, doc = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc.append(line)
        elif doc:
            docs.append(doc)
            doc = []
    return docs + ([doc] if doc else [])


def expected_split(docs: list, seed: int, valid_fraction: float) -> tuple[list, list]:
    """(train, valid) documents by the documented rule, for a corpus where some document hashes
    into valid (the fallback for none is tested on its own)."""
    from fast_electra_ds.data.prepare import in_valid

    train = [d for i, d in enumerate(docs) if not in_valid(seed, i, valid_fraction)]
    valid = [d for i, d in enumerate(docs) if in_valid(seed, i, valid_fraction)]
    assert valid or valid_fraction == 0
    return train, valid


def direct_ids(tok, lines: list[str]) -> list[int]:
    """A document's token ids by tokenizing its lines one by one, without special tokens."""
    return [t for line in lines for t in tok(line, add_special_tokens=False)["input_ids"]]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The first 3000 lines of corpus/kjv.txt (about 100 chapters = documents), as a text file."""
    path = tmp_path_factory.mktemp("corpus") / "kjv_head.txt"
    with open(KJV, encoding="utf-8") as f:
        path.write_text("".join(line for _, line in zip(range(TINY_CORPUS_LINES), f)),
                        encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory, tiny_corpus) -> Path:
    """Folder of a lowercasing WordPiece tokenizer (vocab 2000) trained on `tiny_corpus`;
    load it with `fast_electra_ds.data.tokenizer.load_tokenizer(str(path))`."""
    from fast_electra_ds.data.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer") / "tok"
    return train_tokenizer([str(tiny_corpus)], vocab_size=TINY_VOCAB_SIZE, output=str(out))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_corpus, tiny_tokenizer) -> Path:
    """Folder written by prepare-data from `tiny_corpus` with seq_len 64 (the tiny recipe's) and
    5% of the documents in valid; pass it as data.paths=[str(path)]."""
    from fast_electra_ds.data.prepare import prepare_data

    out = tmp_path_factory.mktemp("dataset") / "tiny"
    prepare_data([str(tiny_corpus)], tokenizer=str(tiny_tokenizer), seq_len=TINY_SEQ_LEN,
                 output=str(out), valid_fraction=TINY_VALID_FRACTION)
    return out


@pytest.fixture
def tokenizer_without(tmp_path):
    """A function returning a fast tokenizer folder whose vocabulary and config lack the given
    special tokens (e.g. {"[MASK]"}), as a tokenizer from elsewhere might."""
    def make(missing: set[str]) -> Path:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        from fast_electra_ds.data.tokenizer import SPECIAL_TOKENS

        specials = [t for t in SPECIAL_TOKENS if t not in missing]
        backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        backend.normalizer = normalizers.BertNormalizer()
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.train_from_iterator(
            ["in the beginning god created the heaven and the earth"] * 5,
            trainers.WordPieceTrainer(vocab_size=100, special_tokens=specials,
                                      show_progress=False))
        attr = {"[PAD]": "pad_token", "[UNK]": "unk_token", "[CLS]": "cls_token",
                "[SEP]": "sep_token", "[MASK]": "mask_token"}
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, **{attr[t]: t for t in specials})
        out = tmp_path / ("tok-without-" + "-".join(sorted(t.strip("[]").lower()
                                                           for t in missing)))
        tok.save_pretrained(str(out))
        return out
    return make


@pytest.fixture
def copy_dataset(tmp_path, tiny_dataset):
    """A function returning a private copy of `tiny_dataset`, safe to modify."""
    def copy(name: str = "copy") -> Path:
        dst = tmp_path / name
        shutil.copytree(tiny_dataset, dst)
        return dst
    return copy


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory, tiny_dataset) -> Path:
    """A generator trained by `pretrain mode=mlm` for 60 steps on `tiny_dataset`: the folder
    RUN_DIR/generator (HF masked LM + tokenizer), usable as generator.path."""
    from fast_electra_ds.config import load_config
    from fast_electra_ds.training import loop

    run_dir = tmp_path_factory.mktemp("mlm") / "run"
    cfg = load_config("tiny", [f"run_dir={run_dir}", f"data.paths={tiny_dataset}", "device=cpu",
                               "mode=mlm", "train.steps=60", "eval.every=60",
                               "optim.warmup_steps=5", "train.global_batch_size=16",
                               "train.micro_batch_size=16", "eval.num_sequences=64"])
    cfg.validate()
    result = loop.pretrain(cfg)
    assert (run_dir / "generator" / "model.safetensors").is_file()
    assert result.eval_metrics["mlm_accuracy"] > 0.0
    return run_dir / "generator"
