"""`fast-electra finetune` and the GLUE readers and metrics.

The GLUE fixtures are small files in the GLUE distribution's layouts, built from lines of the
bundled corpus with synthetic labels; the model is a freshly built tiny ELECTRA discriminator
saved with the tiny tokenizer (what `fast-electra export` writes, minus the pretraining).
"""

from __future__ import annotations

import json
import random
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
