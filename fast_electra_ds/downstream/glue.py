"""GLUE tasks as distributed (local TSV files) or on the hub (nyu-mll/glue), and their metrics in
plain numpy.

Each task folder of the GLUE distribution (e.g. glue_data/SST-2) holds train.tsv and a dev file,
tab-separated, one example per line, with the columns below (read by name from the header line;
CoLA has no header, so its columns are positional). Labels are read as the strings GLUE uses and
mapped to ids in the order listed; STS-B's score is a float (regression).

| task | folder | dev file | text columns | label column | metrics |
|---|---|---|---|---|---|
| cola | CoLA | dev.tsv | 4th (sentence) | 2nd: 0/1 | matthews_corr |
| sst2 | SST-2 | dev.tsv | sentence | label: 0/1 | accuracy |
| mrpc | MRPC | dev.tsv | #1 String, #2 String | Quality: 0/1 | accuracy, f1 |
| stsb | STS-B | dev.tsv | sentence1, sentence2 | score: 0-5 | spearman, pearson |
| qqp | QQP | dev.tsv | question1, question2 | is_duplicate: 0/1 | accuracy, f1 |
| mnli | MNLI | dev_matched.tsv | sentence1, sentence2 | gold_label: 3 classes | accuracy |
| qnli | QNLI | dev.tsv | question, sentence | label: (not_)entailment | accuracy |
| rte | RTE | dev.tsv | sentence1, sentence2 | label: (not_)entailment | accuracy |

Without a TSV folder, a task is read from the hub dataset nyu-mll/glue through `datasets`
(`read_hub`; config = the task name above, dev = its validation split, MNLI's validation_matched)
and converted to what the TSV files give for the same rows: the same texts in the same order and
the same label ids. Its columns and class names (in the hub's id order, which for MNLI differs
from the ids above):

| task | text columns         | label class names                          |
|------|----------------------|--------------------------------------------|
| cola | sentence             | unacceptable, acceptable                   |
| sst2 | sentence             | negative, positive                         |
| mrpc | sentence1, sentence2 | not_equivalent, equivalent                 |
| stsb | sentence1, sentence2 | (a float score)                            |
| qqp  | question1, question2 | not_duplicate, duplicate                   |
| mnli | premise, hypothesis  | entailment, neutral, contradiction         |
| qnli | question, sentence   | entailment, not_entailment                 |
| rte  | sentence1, sentence2 | entailment, not_entailment                 |

The main metric is the one ELECTRA reports on the dev sets (Clark et al. 2020: Spearman for
STS-B, Matthews correlation for CoLA, accuracy for the rest); F1 and Pearson come along.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fast_electra_ds.data.corpus import HubSplit, read_hub_splits
from fast_electra_ds.errors import UserError

HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class HubLayout:
    """A task in the hub dataset nyu-mll/glue, whose config is the task's name."""

    text_columns: tuple[str, ...]  # the same texts as Task.text_columns, in that order
    label_names: tuple[str, ...] | None  # the class names of Task.labels, in that order
    dev_split: str = "validation"


@dataclass(frozen=True)
class Task:
    name: str
    folder: str  # the task's folder name in the GLUE distribution
    dev_file: str
    text_columns: tuple[str, ...]  # one (single sentence) or two (a pair)
    label_column: str
    labels: tuple[str, ...] | None  # None: regression (a float score)
    metrics: tuple[str, ...]  # the first is the task's main metric
    epochs: int  # ELECTRA's fine-tuning epochs: 10 for RTE and STS-B, 3 for the others
    hub: HubLayout
    columns: tuple[str, ...] | None = None  # the column names of a file without a header


_NLI = ("entailment", "not_entailment")
TASKS: dict[str, Task] = {t.name: t for t in (
    Task("cola", "CoLA", "dev.tsv", ("sentence",), "label", ("0", "1"), ("matthews_corr",), 3,
         HubLayout(("sentence",), ("unacceptable", "acceptable")),
         columns=("source", "label", "original_label", "sentence")),
    Task("sst2", "SST-2", "dev.tsv", ("sentence",), "label", ("0", "1"), ("accuracy",), 3,
         HubLayout(("sentence",), ("negative", "positive"))),
    Task("mrpc", "MRPC", "dev.tsv", ("#1 String", "#2 String"), "Quality", ("0", "1"),
         ("accuracy", "f1"), 3,
         HubLayout(("sentence1", "sentence2"), ("not_equivalent", "equivalent"))),
    Task("stsb", "STS-B", "dev.tsv", ("sentence1", "sentence2"), "score", None,
         ("spearman", "pearson"), 10, HubLayout(("sentence1", "sentence2"), None)),
    Task("qqp", "QQP", "dev.tsv", ("question1", "question2"), "is_duplicate", ("0", "1"),
         ("accuracy", "f1"), 3,
         HubLayout(("question1", "question2"), ("not_duplicate", "duplicate"))),
    Task("mnli", "MNLI", "dev_matched.tsv", ("sentence1", "sentence2"), "gold_label",
         ("contradiction", "entailment", "neutral"), ("accuracy",), 3,
         HubLayout(("premise", "hypothesis"), ("contradiction", "entailment", "neutral"),
                   dev_split="validation_matched")),
    Task("qnli", "QNLI", "dev.tsv", ("question", "sentence"), "label", _NLI, ("accuracy",), 3,
         HubLayout(("question", "sentence"), _NLI)),
    Task("rte", "RTE", "dev.tsv", ("sentence1", "sentence2"), "label", _NLI, ("accuracy",), 10,
         HubLayout(("sentence1", "sentence2"), _NLI)),
)}


def get_task(name: str) -> Task:
    task = TASKS.get(name.lower())
    if task is None:
        raise UserError(f"unknown GLUE task {name!r}; valid tasks: {', '.join(TASKS)}")
    return task


@dataclass
class Examples:
    texts: list[tuple[str, ...]]  # per example: one or two texts
    labels: np.ndarray  # [N] int64 class ids, or float32 scores for regression
    num_skipped: int  # lines with too few fields (the GLUE QQP train file has a few)


def task_dir(data_dir: str | Path, task: Task) -> Path:
    """`data_dir` itself, or its GLUE-named subfolder (glue_data/ -> glue_data/SST-2)."""
    folder = Path(data_dir)
    if not (folder / "train.tsv").is_file() and (folder / task.folder / "train.tsv").is_file():
        return folder / task.folder
    return folder


def read_split(folder: Path, task: Task, split: str) -> Examples:
    """The `split` ("train" or "dev") examples of `task` from its TSV file in `folder`."""
    path = folder / ("train.tsv" if split == "train" else task.dev_file)
    if not path.is_file():
        raise UserError(f"{task.name}: {path} does not exist; --data-dir must be the task's "
                        f"GLUE folder ({task.folder}/) holding train.tsv and {task.dev_file}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if task.columns is None:
        header, rows = (lines[0].split("\t") if lines else []), lines[1:]
        layout = f"a header line with the columns {', '.join(_needed(task))}"
    else:
        header, rows = list(task.columns), lines
        layout = (f"{len(task.columns)} tab-separated columns and no header: "
                  f"{', '.join(task.columns)}")
    first = next((line.split("\t") for line in rows if line.strip()), None)
    if task.columns is not None and first is not None and len(first) < len(header):
        raise UserError(f"{task.name}: {path} has {len(first)} column(s) on its first line; "
                        f"expected {layout} (the GLUE distribution's layout)")
    missing = [c for c in _needed(task) if c not in header]
    if missing:
        raise UserError(f"{task.name}: {path} lacks the column(s) {', '.join(missing)}; expected "
                        f"{layout} (the GLUE distribution's layout)")
    index = {c: header.index(c) for c in _needed(task)}
    width = max(index.values()) + 1
    texts, labels, skipped = [], [], 0
    for line_no, line in enumerate(rows, start=1 if task.columns else 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < width:
            skipped += 1
            continue
        texts.append(tuple(fields[index[c]] for c in task.text_columns))
        labels.append(_label(fields[index[task.label_column]], task, path, line_no))
    if not texts:
        raise UserError(f"{task.name}: {path} holds no examples; expected {layout}")
    dtype = np.float32 if task.labels is None else np.int64
    return Examples(texts, np.asarray(labels, dtype=dtype), skipped)


def read_hub(task: Task) -> tuple[Examples, Examples]:
    """The train and dev examples of `task` from the hub dataset nyu-mll/glue, as `read_split`
    gives them from the TSV files holding the same rows."""
    splits = read_hub_splits(
        HUB_DATASET, task.name, ("train", task.hub.dev_split),
        instead=f"pass --data-dir with the task's GLUE TSV folder ({task.folder}/: train.tsv and "
                f"{task.dev_file})")
    return (_hub_examples(task, splits["train"], "train"),
            _hub_examples(task, splits[task.hub.dev_split], task.hub.dev_split))


def _hub_examples(task: Task, table: HubSplit, split: str) -> Examples:
    where = f"{HUB_DATASET} ({task.name}, {split})"
    missing = [c for c in (*task.hub.text_columns, "label") if c not in table.columns]
    if missing:
        raise UserError(f"{where} lacks the column(s) {', '.join(missing)} (it has "
                        f"{', '.join(table.columns)}); pass --data-dir with the task's GLUE TSV "
                        f"folder ({task.folder}/)")
    texts = list(zip(*(table.columns[c] for c in task.hub.text_columns)))
    if not texts:
        raise UserError(f"{where} holds no examples; pass --data-dir with the task's GLUE TSV "
                        f"folder ({task.folder}/)")
    if task.labels is None:
        return Examples(texts, np.asarray(table.columns["label"], dtype=np.float32), 0)
    names = table.class_names.get("label")
    if names is None or sorted(names) != sorted(task.hub.label_names):
        raise UserError(f"{where}: the label column's classes are "
                        f"{', '.join(names) if names else 'not named'}, not "
                        f"{', '.join(task.hub.label_names)}; pass --data-dir with the task's "
                        f"GLUE TSV folder ({task.folder}/)")
    hub_ids = np.asarray(table.columns["label"], dtype=np.int64)  # [N] in the hub's id order
    if hub_ids.min() < 0 or hub_ids.max() >= len(names):  # -1: an unlabelled (test) row
        raise UserError(f"{where}: label ids range over {hub_ids.min()}..{hub_ids.max()}, not "
                        f"0..{len(names) - 1}")
    ids = np.asarray([task.hub.label_names.index(name) for name in names], dtype=np.int64)
    return Examples(texts, ids[hub_ids], 0)


def _needed(task: Task) -> list[str]:
    return [*task.text_columns, task.label_column]


def _label(raw: str, task: Task, path: Path, line_no: int) -> float | int:
    if task.labels is None:
        try:
            return float(raw)
        except ValueError:
            raise UserError(f"{task.name}: {path} line {line_no}: {task.label_column} "
                            f"{raw!r} is not a number") from None
    if raw not in task.labels:
        raise UserError(f"{task.name}: {path} line {line_no}: {task.label_column} {raw!r} is "
                        f"not one of {', '.join(task.labels)}")
    return task.labels.index(raw)


# --------------------------------------------------------------------------------------------
# Metrics: predictions and labels as numpy arrays of shape [N]


def accuracy(pred: np.ndarray, label: np.ndarray) -> float:
    return float(np.mean(pred == label))


def f1(pred: np.ndarray, label: np.ndarray) -> float:
    """Binary F1 of class 1 (0 when it is never predicted nor present)."""
    tp = float(np.sum((pred == 1) & (label == 1)))
    fp = float(np.sum((pred == 1) & (label != 1)))
    fn = float(np.sum((pred != 1) & (label == 1)))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0


def matthews_corr(pred: np.ndarray, label: np.ndarray) -> float:
    """Matthews correlation of binary predictions (0 when a row or column of the confusion
    matrix is empty, as scikit-learn does)."""
    tp = float(np.sum((pred == 1) & (label == 1)))
    tn = float(np.sum((pred != 1) & (label != 1)))
    fp = float(np.sum((pred == 1) & (label != 1)))
    fn = float(np.sum((pred != 1) & (label == 1)))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denom) if denom > 0 else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    x, y = x.astype(np.float64) - x.mean(), y.astype(np.float64) - y.mean()
    denom = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / denom) if denom > 0 else float("nan")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share their average rank."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]  # exclusive
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: Pearson of the average ranks."""
    return pearson(_average_ranks(np.asarray(x)), _average_ranks(np.asarray(y)))


METRICS = {"accuracy": accuracy, "f1": f1, "matthews_corr": matthews_corr, "pearson": pearson,
           "spearman": spearman}


def compute_metrics(task: Task, pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """The task's metrics; `pred` holds class ids, or scores for regression."""
    return {name: METRICS[name](pred, label) for name in task.metrics}
