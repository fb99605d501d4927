"""`fast-electra finetune` and the GLUE readers and metrics.

The GLUE fixtures are small files in the GLUE distribution's layouts, built from lines of the
bundled corpus with synthetic labels; the model is a freshly built tiny ELECTRA discriminator
saved with the tiny tokenizer (what `fast-electra export` writes, minus the pretraining). The hub
dataset nyu-mll/glue is stood in for by in-memory DatasetDicts with its columns, class labels and
splits, returned by a replaced `datasets.load_dataset` (there is no network here); the offline
error is checked with the real one, offline and with an empty cache.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fast_electra_ds.cli import main
from fast_electra_ds.downstream import glue
from fast_electra_ds.downstream.finetune import layerwise_param_groups

REPO = Path(__file__).resolve().parent.parent
NUM_ROWS = 60
STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
               "sentence1", "sentence2", "score"]


def _corpus_lines(n: int, skip: int = 0) -> list[str]:
    lines = []
    with open(REPO / "corpus" / "kjv.txt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line.strip())
            if len(lines) == skip + n:
                break
    return lines[skip:]


def _write_tsv(path: Path, header: list[str] | None, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([header] if header else []) + rows
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in lines), encoding="utf-8")


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory) -> Path:
    """glue/SST-2 (label: does the verse name the LORD) and glue/STS-B (score: a verse with
    itself 5, with its neighbour a random 0-3), train.tsv and dev.tsv of 60 rows each."""
    root = tmp_path_factory.mktemp("glue")
    rnd = random.Random(0)
    for split, skip in (("train", 0), ("dev", 200)):
        lines = _corpus_lines(NUM_ROWS + 1, skip)
        _write_tsv(root / "SST-2" / f"{split}.tsv", ["sentence", "label"],
                   [[s, int("lord" in s.lower())] for s in lines[:NUM_ROWS]])
        rows = []
        for i in range(NUM_ROWS):
            same = i % 2 == 0
            b = lines[i] if same else lines[i + 1]
            score = 5.0 if same else round(rnd.uniform(0, 3), 3)
            rows.append([i, "main-captions", "MSRvid", "2012test", i, "none", "none",
                         lines[i], b, score])
        _write_tsv(root / "STS-B" / f"{split}.tsv", STSB_HEADER, rows)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_tokenizer) -> Path:
    import torch
    from transformers import AutoTokenizer, ElectraConfig, ElectraForPreTraining

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    path = tmp_path_factory.mktemp("model") / "discriminator"
    torch.manual_seed(0)
    ElectraForPreTraining(ElectraConfig(
        vocab_size=len(tok), embedding_size=32, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=128, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("task, metrics", [("sst2", ["accuracy"]),
                                           ("stsb", ["spearman", "pearson"])])
def test_finetune_end_to_end_writes_per_seed_and_median(tmp_path, glue_dir, tiny_model, task,
                                                        metrics):
    data = glue_dir / {"sst2": "SST-2", "stsb": "STS-B"}[task]
    out = tmp_path / "results"
    code = main(["finetune", "--model", str(tiny_model), "--task", task, "--data-dir",
                 str(data), "--seeds", "1,2", "--epochs", "1", "--batch-size", "16",
                 "--device", "cpu", "--output", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == task and results["main_metric"] == metrics[0]
    assert results["num_train"] == results["num_dev"] == NUM_ROWS
    assert sorted(results["per_seed"]) == ["1", "2"]
    for name in metrics:
        values = [results["per_seed"][s][name] for s in ("1", "2")]
        assert all(v is not None and -1.0 <= v <= 1.0 for v in values), values
        assert results["median"][name] == pytest.approx(float(np.median(values)))
    assert results["config"]["epochs"] == 1 and results["config"]["layer_decay"] == 0.8


def test_finetune_data_dir_may_be_the_glue_root_and_defaults_output(tmp_path, glue_dir,
                                                                   tiny_model, capsys):
    import shutil

    model = tmp_path / "export" / "discriminator"
    shutil.copytree(tiny_model, model)
    args = ["finetune", "--model", str(model), "--task", "SST2", "--data-dir", str(glue_dir),
            "--seeds", "3", "--epochs", "0.5", "--device", "cpu"]
    assert main(args) == 0
    results = tmp_path / "export" / "glue" / "sst2" / "results.json"
    assert json.loads(results.read_text())["per_seed"].keys() == {"3"}
    assert main(args) == 2  # results are not silently replaced
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_metrics_match_sklearn_and_scipy():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 200))
        label, pred = rng.integers(0, 2, n), rng.integers(0, 2, n)
        assert glue.accuracy(pred, label) == pytest.approx(accuracy_score(label, pred))
        assert glue.f1(pred, label) == pytest.approx(f1_score(label, pred, zero_division=0))
        assert glue.matthews_corr(pred, label) == pytest.approx(matthews_corrcoef(label, pred))
        x, y = rng.normal(size=n), rng.normal(size=n)
        ties = rng.integers(0, 5, n).astype(float)  # many ties: average ranks matter
        assert glue.pearson(x, y) == pytest.approx(pearsonr(x, y)[0])
        assert glue.spearman(x, y) == pytest.approx(spearmanr(x, y)[0])
        assert glue.spearman(ties, y) == pytest.approx(spearmanr(ties, y)[0])
    # degenerate cases, as scikit-learn treats them
    zeros = np.zeros(10, dtype=int)
    assert glue.matthews_corr(zeros, rng.integers(0, 2, 10)) == 0.0
    assert glue.f1(zeros, zeros) == 0.0
    assert np.isnan(glue.pearson(np.ones(5), np.arange(5.0)))


def test_layerwise_learning_rates_are_electras():
    """ELECTRA's _get_layer_lrs: depth 0 embeddings, i + 1 layer i, L + 2 the head, and
    lr * decay^(L + 2 - depth); checked on a 4-layer model."""
    from transformers import ElectraConfig, ElectraForSequenceClassification

    model = ElectraForSequenceClassification(ElectraConfig(
        vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=4,
        num_attention_heads=2, intermediate_size=64, num_labels=2))
    lr, decay, layers = 1e-4, 0.8, 4
    groups = layerwise_param_groups(model, lr=lr, layer_decay=decay, weight_decay=0.01)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(lr_of) == len(named)

    def electra_lr(depth: int) -> float:  # model/optimization.py, _get_layer_lrs
        return lr * decay ** (layers + 2 - depth)

    def got(name: str) -> tuple[float, float]:
        return lr_of[id(named[name])]

    assert got("classifier.out_proj.weight") == pytest.approx((electra_lr(layers + 2), 0.01))
    assert got("classifier.dense.bias") == pytest.approx((lr, 0.0))
    for i in range(layers):
        assert got(f"electra.encoder.layer.{i}.attention.self.query.weight") == pytest.approx(
            (electra_lr(i + 1), 0.01))
        assert got(f"electra.encoder.layer.{i}.output.LayerNorm.weight") == pytest.approx(
            (electra_lr(i + 1), 0.0))
    assert got("electra.encoder.layer.3.output.dense.weight")[0] == pytest.approx(lr * decay ** 2)
    for name in ("electra.embeddings.word_embeddings.weight",
                 "electra.embeddings.token_type_embeddings.weight",
                 "electra.embeddings_project.weight"):
        assert got(name) == pytest.approx((electra_lr(0), 0.01))
    assert electra_lr(0) == pytest.approx(lr * decay ** 6)


def test_pairs_are_encoded_with_segment_b_token_types(tiny_model, monkeypatch):
    """[CLS] A [SEP] B [SEP] with type 1 on B reaches the model in training and evaluation."""
    from transformers.models.electra.modeling_electra import ElectraModel

    from fast_electra_ds.downstream import finetune
    from fast_electra_ds.downstream.glue import Examples

    tok = finetune._tokenizer(str(tiny_model))
    examples = Examples(texts=[("in the beginning", "god created the heaven")],
                        labels=np.array([1]), num_skipped=0)
    (ids,), (types,) = finetune._encode(tok, examples, 128)
    first_sep = ids.index(tok.sep_token_id)
    assert types[:first_sep + 1] == [0] * (first_sep + 1) and set(types[first_sep + 1:]) == {1}

    seen = []
    real = ElectraModel.forward

    def spy(self, *args, token_type_ids=None, **kwargs):
        seen.append(token_type_ids is not None and bool((token_type_ids == 1).any()))
        return real(self, *args, token_type_ids=token_type_ids, **kwargs)

    monkeypatch.setattr(ElectraModel, "forward", spy)
    cfg = finetune.FinetuneConfig(model=str(tiny_model), task="mrpc", data_dir="unused",
                                  seeds=(1,), epochs=1, batch_size=1, device="cpu")
    finetune._run_seed(cfg, finetune.get_task("mrpc"), tok, ([ids], [types]), np.array([1]),
                       ([ids], [types]), np.array([1]), seed=1, epochs=1,
                       device=finetune._device("cpu"))
    assert seen and all(seen)  # every forward, train and dev, saw segment B


def test_every_task_reads_its_glue_layout(tmp_path):
    s1, s2 = "in the beginning", "god created"
    layouts = {  # task: (header or None, train row, dev row, expected label id of the row)
        "cola": (None, ["gj04", "1", "", s1], ["gj04", "0", "*", s2], 1),
        "sst2": (["sentence", "label"], [s1, "1"], [s2, "0"], 1),
        "mrpc": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                 ["1", "7", "8", s1, s2], ["0", "7", "8", s1, s2], 1),
        "stsb": (STSB_HEADER, ["0", "g", "f", "y", "0", "n", "n", s1, s2, "3.8"],
                 ["0", "g", "f", "y", "0", "n", "n", s1, s2, "1.0"], 3.8),
        "qqp": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                ["0", "1", "2", s1, s2, "1"], ["0", "1", "2", s1, s2, "0"], 1),
        "mnli": (["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                  "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
                  "sentence2", "label1", "gold_label"],
                 ["0", "1", "2", "g", "b", "b", "p", "p", s1, s2, "neutral", "neutral"],
                 ["0", "1", "2", "g", "b", "b", "p", "p", s1, s2, "entailment", "entailment"],
                 2),
        "qnli": (["index", "question", "sentence", "label"],
                 ["0", s1, s2, "not_entailment"], ["0", s1, s2, "entailment"], 1),
        "rte": (["index", "sentence1", "sentence2", "label"],
                ["0", s1, s2, "not_entailment"], ["0", s1, s2, "entailment"], 1),
    }
    assert set(layouts) == set(glue.TASKS)
    for name, (header, train_row, dev_row, label) in layouts.items():
        task = glue.get_task(name)
        folder = tmp_path / task.folder
        _write_tsv(folder / "train.tsv", header, [train_row])
        _write_tsv(folder / task.dev_file, header, [dev_row, dev_row[:1]])  # + a short line
        train = glue.read_split(glue.task_dir(tmp_path, task), task, "train")
        dev = glue.read_split(folder, task, "dev")
        assert train.labels[0] == pytest.approx(label), name
        assert len(train.texts[0]) == len(task.text_columns) and s1 in train.texts[0][-2:]
        assert len(dev.texts) == 1 and dev.num_skipped == 1, name


@pytest.mark.parametrize("case, needle", [
    ("unknown_task", "unknown GLUE task 'sst-3'; valid tasks: cola, sst2, mrpc, stsb, qqp, "
                     "mnli, qnli, rte"),
    ("missing_dev", "dev.tsv does not exist"),
    ("missing_column", "lacks the column(s) label; expected a header line with the columns "
                       "sentence, label"),
    ("cola_too_few_columns", "has 3 column(s) on its first line; expected 4 tab-separated "
                             "columns and no header: source, label, original_label, sentence"),
    ("bad_label", "label 'positive' is not one of 0, 1"),
    ("not_a_model", "is not a HF model folder"),
])
def test_bad_input_is_a_user_error(tmp_path, tiny_model, capsys, case, needle):
    folder = tmp_path / "task"
    task, model = "sst2", str(tiny_model)
    _write_tsv(folder / "train.tsv", ["sentence", "label"], [["a verse", "1"]])
    _write_tsv(folder / "dev.tsv", ["sentence", "label"], [["a verse", "0"]])
    if case == "unknown_task":
        task = "sst-3"
    elif case == "missing_dev":
        (folder / "dev.tsv").unlink()
    elif case == "missing_column":
        _write_tsv(folder / "train.tsv", ["sentence", "polarity"], [["a verse", "1"]])
    elif case == "cola_too_few_columns":
        task = "cola"
        _write_tsv(folder / "train.tsv", None, [["gj04", "1", ""]])
    elif case == "bad_label":
        _write_tsv(folder / "train.tsv", ["sentence", "label"], [["a verse", "positive"]])
    elif case == "not_a_model":
        model = str(tmp_path)
    code = main(["finetune", "--model", model, "--task", task, "--data-dir", str(folder),
                 "--seeds", "1", "--device", "cpu", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert str(folder / ("train.tsv" if case != "missing_dev" else "dev.tsv")) in err \
        or case in ("unknown_task", "not_a_model")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# The hub dataset nyu-mll/glue, without --data-dir

# task: (text columns, class names in the hub's id order, the TSV label of each hub id), as the
# dataset card lists them; STS-B's label is a float score
HUB_LAYOUT = {
    "cola": (("sentence",), ("unacceptable", "acceptable"), ("0", "1")),
    "sst2": (("sentence",), ("negative", "positive"), ("0", "1")),
    "mrpc": (("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("0", "1")),
    "stsb": (("sentence1", "sentence2"), None, None),
    "qqp": (("question1", "question2"), ("not_duplicate", "duplicate"), ("0", "1")),
    "mnli": (("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
             ("entailment", "neutral", "contradiction")),
    "qnli": (("question", "sentence"), ("entailment", "not_entailment"),
             ("entailment", "not_entailment")),
    "rte": (("sentence1", "sentence2"), ("entailment", "not_entailment"),
            ("entailment", "not_entailment")),
}
HUB_SPLITS = {"mnli": ("train", "validation_matched", "validation_mismatched", "test_matched",
                       "test_mismatched")}


def _rows(task: str, n: int, skip: int) -> list[tuple[tuple[str, ...], str]]:
    """n examples of `task` as (texts, TSV label): a verse (every third one labelled "1"), or a
    pair, the verse with itself (the last class, score 5) or with its neighbour (the others in
    turn, a score below 3)."""
    lines = _corpus_lines(n + 1, skip)
    labels = HUB_LAYOUT[task][2]
    rows = []
    for i in range(n):
        if len(HUB_LAYOUT[task][0]) == 1:
            rows.append(((lines[i],), labels[int(i % 3 == 0)]))
            continue
        same = i % 2 == 0
        if labels is None:
            label = "5.0" if same else f"{(i * 0.37) % 3:.3f}"
        else:
            label = labels[-1] if same else labels[(i // 2) % (len(labels) - 1)]
        rows.append(((lines[i], lines[i] if same else lines[i + 1]), label))
    return rows


def _write_task_tsv(folder: Path, task: glue.Task, split_rows: dict[str, list]) -> None:
    """train.tsv and the dev file of `task` in the GLUE distribution's layout."""
    for split, rows in split_rows.items():
        path = folder / ("train.tsv" if split == "train" else task.dev_file)
        if task.columns is not None:  # CoLA: source, label, original label, sentence
            _write_tsv(path, None, [["gj04", label, "", texts[0]] for texts, label in rows])
        else:
            _write_tsv(path, ["index", *task.text_columns, task.label_column],
                       [[i, *texts, label] for i, (texts, label) in enumerate(rows)])


def _hub_dataset(task: str, split_rows: dict[str, list]):
    """A DatasetDict as load_dataset("nyu-mll/glue", task) returns it: every split of the card,
    test splits unlabelled (-1), the others holding `split_rows`."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    text_columns, names, tsv_labels = HUB_LAYOUT[task]
    features = Features({**{c: Value("string") for c in text_columns},
                         "label": ClassLabel(names=list(names)) if names else Value("float32"),
                         "idx": Value("int32")})
    splits = {}
    for split in HUB_SPLITS.get(task, ("train", "validation", "test")):
        rows = split_rows["train" if split == "train" else "dev"]
        label = (lambda raw: -1) if split.startswith("test") else \
            (float if names is None else tsv_labels.index)
        splits[split] = Dataset.from_dict(
            {**{c: [texts[k] for texts, _ in rows] for k, c in enumerate(text_columns)},
             "label": [label(raw) for _, raw in rows], "idx": list(range(len(rows)))},
            features=features)
    return DatasetDict(splits)


@pytest.fixture
def fake_hub(monkeypatch):
    """Stands in `datasets.load_dataset` for nyu-mll/glue: fake_hub[task] = DatasetDict."""
    import datasets

    configs: dict = {}

    def load_dataset(path, name=None, **kwargs):
        assert path == "nyu-mll/glue" and not kwargs, (path, kwargs)
        return configs[name]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return configs


def test_hub_gives_the_tsv_examples_for_every_task(tmp_path, fake_hub):
    """Same rows as TSV files and as nyu-mll/glue: the same texts and label ids (MNLI's hub ids
    are in another order), dev from validation (MNLI: validation_matched)."""
    assert set(HUB_LAYOUT) == set(glue.TASKS)
    for name in glue.TASKS:
        task = glue.get_task(name)
        split_rows = {"train": _rows(name, 12, 0), "dev": _rows(name, 6, 300)}
        _write_task_tsv(tmp_path / task.folder, task, split_rows)
        fake_hub[name] = _hub_dataset(name, split_rows)
        hub_train, hub_dev = glue.read_hub(task)
        for split, hub in (("train", hub_train), ("dev", hub_dev)):
            tsv = glue.read_split(tmp_path / task.folder, task, split)
            assert hub.texts == tsv.texts and hub.num_skipped == tsv.num_skipped == 0, name
            assert hub.labels.dtype == tsv.labels.dtype, name
            np.testing.assert_array_equal(hub.labels, tsv.labels, err_msg=name)
            if task.labels is not None:
                assert len(set(hub.labels.tolist())) > 1, name  # the labels vary


@pytest.mark.parametrize("task", ["sst2", "mrpc"])
def test_finetune_without_data_dir_trains_on_the_hub_as_on_tsv(tmp_path, tiny_model, fake_hub,
                                                               capsys, task):
    """The whole command on nyu-mll/glue rows gives the results it gives on the same rows as TSV
    files (same examples, same seed: the same metrics)."""
    glue_task = glue.get_task(task)
    split_rows = {"train": _rows(task, NUM_ROWS, 0), "dev": _rows(task, NUM_ROWS, 200)}
    _write_task_tsv(tmp_path / "tsv", glue_task, split_rows)
    fake_hub[task] = _hub_dataset(task, split_rows)
    args = ["finetune", "--model", str(tiny_model), "--task", task, "--seeds", "1",
            "--epochs", "1", "--batch-size", "16", "--device", "cpu"]
    assert main(args + ["--output", str(tmp_path / "hub_out")]) == 0
    assert f"{task}: reading nyu-mll/glue ({task})" in capsys.readouterr().out
    assert main(args + ["--data-dir", str(tmp_path / "tsv"),
                        "--output", str(tmp_path / "tsv_out")]) == 0
    hub, tsv = (json.loads((tmp_path / out / "results.json").read_text())
                for out in ("hub_out", "tsv_out"))
    assert hub["num_train"] == hub["num_dev"] == NUM_ROWS
    assert hub["config"]["data_dir"] is None
    for results in (hub, tsv):
        results["per_seed"]["1"].pop("train_time_s")
    assert hub["per_seed"] == tsv["per_seed"] and hub["median"] == tsv["median"]
    assert all(v is not None for v in hub["median"].values())


@pytest.mark.parametrize("case, needle", [
    ("missing_column", "nyu-mll/glue (sst2, train) lacks the column(s) sentence"),
    ("other_classes", "the label column's classes are bad, good, not negative, positive"),
    ("missing_split", "holds the splits train, test, not validation; pass --data-dir"),
])
def test_unexpected_hub_layout_is_a_user_error(tmp_path, tiny_model, fake_hub, capsys, case,
                                               needle):
    from datasets import ClassLabel, Dataset, DatasetDict

    dataset = _hub_dataset("sst2", {"train": _rows("sst2", 4, 0), "dev": _rows("sst2", 4, 9)})
    if case == "missing_column":
        dataset = dataset.rename_column("sentence", "text")
    elif case == "other_classes":
        features = dataset["train"].features.copy()
        features["label"] = ClassLabel(names=["bad", "good"])
        dataset = DatasetDict({split: Dataset.from_dict(ds.to_dict(), features=features)
                               for split, ds in dataset.items()})
    else:
        del dataset["validation"]
    fake_hub["sst2"] = dataset
    code = main(["finetune", "--model", str(tiny_model), "--task", "sst2", "--seeds", "1",
                 "--device", "cpu", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_offline_without_a_cached_copy_is_a_user_error(tmp_path, tiny_model):
    """The real `datasets`, offline with an empty cache: exit 2, a message naming the dataset and
    both ways out, and no output folder."""
    hf_home = tmp_path / "hf"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(hf_home),
           "HF_DATASETS_CACHE": str(hf_home / "datasets"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "fast_electra_ds", "finetune", "--model", str(tiny_model),
         "--task", "mnli", "--seeds", "1", "--device", "cpu", "--output", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert err.startswith("error: the hub dataset nyu-mll/glue (config mnli) cannot be loaded "
                          "(offline mode is on"), err
    assert "Traceback" not in err and str(hf_home / "datasets") in err
    assert "HF_DATASETS_OFFLINE=1" in err
    assert "pass --data-dir with the task's GLUE TSV folder (MNLI/: train.tsv and " \
           "dev_matched.tsv)" in err
    assert not out.exists()
