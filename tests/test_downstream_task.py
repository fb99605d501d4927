"""The downstream yardstick built from a corpus (benchmarks/downstream_task.py): balanced pairs in
the MRPC layout that `finetune` reads, positives are adjacent lines of one document, negatives
lines of two documents, and dev pairs come only from documents prepare-data holds out."""

from __future__ import annotations

from benchmarks import downstream_task
from fast_electra_ds.data.prepare import in_valid
from fast_electra_ds.downstream.glue import get_task, read_split


def test_pairs_are_balanced_adjacent_or_foreign_and_dev_is_held_out(tmp_path, tiny_corpus):
    from conftest import text_documents

    out = tmp_path / "task"
    counts = downstream_task.build(str(tiny_corpus), out, num_train=400, num_dev=100, seed=3)
    assert counts == {"train": 400, "dev": 100}
    docs = text_documents(tiny_corpus)
    clip = downstream_task._clip
    where = {}  # clipped line -> {(split, document, index)}
    for d, lines in enumerate(docs):
        split = "dev" if in_valid(downstream_task.PREPARE_SEED, d,
                                  downstream_task.PREPARE_VALID_FRACTION) else "train"
        usable = [clip(x) for x in lines if len(x.split()) >= downstream_task.MIN_WORDS]
        for i, line in enumerate(usable):
            where.setdefault(line, set()).add((split, d, i))
    task = get_task("mrpc")
    for split, num in (("train", 400), ("dev", 100)):
        examples = read_split(out, task, split)
        assert len(examples.texts) == num and examples.labels.sum() == num // 2
        for (a, b), label in zip(examples.texts, examples.labels):
            spots_a = {s for s in where[a] if s[0] == split}
            spots_b = {s for s in where[b] if s[0] == split}
            assert spots_a and spots_b  # both lines from this split's documents
            adjacent = any((sa[1], sa[2] + 1) == (sb[1], sb[2])
                           for sa in spots_a for sb in spots_b)
            docs_a, docs_b = {s[1] for s in spots_a}, {s[1] for s in spots_b}
            if label == 1:
                assert adjacent
            else:  # B comes from another document (a line may occur in several: KJV repeats)
                assert docs_b - docs_a or len(docs_a) > 1
            assert len(a.split()) <= downstream_task.MAX_WORDS


def test_the_task_is_a_pure_function_of_corpus_and_seed(tmp_path, tiny_corpus):
    one = downstream_task.build(str(tiny_corpus), tmp_path / "a", num_train=50, num_dev=20)
    two = downstream_task.build(str(tiny_corpus), tmp_path / "b", num_train=50, num_dev=20)
    assert one == two
    for name in ("train.tsv", "dev.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
