"""Tokenizer: training output, reload, special-token checks, fingerprint, safe output folders."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tokenizers import normalizers
from transformers import AutoTokenizer

from fast_electra_ds.data.tokenizer import (SPECIAL_TOKENS, load_tokenizer, special_token_ids,
                                            tokenizer_fingerprint, train_tokenizer)
from fast_electra_ds.errors import UserError


def test_trained_folder_layout_and_reload(tiny_tokenizer):
    assert {p.name for p in tiny_tokenizer.iterdir()} == {"tokenizer.json",
                                                         "tokenizer_config.json", "vocab.txt"}
    tok = load_tokenizer(str(tiny_tokenizer))
    assert tok.is_fast
    assert len(tok) <= 2000
    vocab_txt = (tiny_tokenizer / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab = tok.get_vocab()
    assert vocab_txt == sorted(vocab, key=vocab.__getitem__)  # id order, nothing missing
    assert vocab_txt[:5] == list(SPECIAL_TOKENS)
    assert special_token_ids(tok) == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}

    # plain AutoTokenizer sees the same thing; lowercasing and the [CLS] $A [SEP] template work
    auto = AutoTokenizer.from_pretrained(str(tiny_tokenizer))
    ids = auto("In the Beginning")["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3
    assert auto.decode(ids[1:-1]) == "in the beginning"
    assert ids == tok("in the beginning")["input_ids"]


def test_cased_tokenizer_keeps_case(tmp_path, tiny_corpus):
    out = train_tokenizer([str(tiny_corpus)], vocab_size=600, output=str(tmp_path / "cased"),
                          lowercase=False)
    tok = load_tokenizer(str(out))
    assert tok.decode(tok("God", add_special_tokens=False)["input_ids"]) == "God"


def test_fingerprint_names_vocabulary_and_normalization(tiny_tokenizer):
    a = load_tokenizer(str(tiny_tokenizer))
    b = load_tokenizer(str(tiny_tokenizer))
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    assert len(tokenizer_fingerprint(a)) == 64
    b.backend_tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)  # same vocabulary, other casing


def test_missing_special_tokens_are_named(tokenizer_without):
    with pytest.raises(UserError, match=r"lacks the special token\(s\) \[MASK\] ") as e:
        load_tokenizer(str(tokenizer_without({"[MASK]"})))
    assert "train-tokenizer" in str(e.value)
    with pytest.raises(UserError) as e:
        load_tokenizer(str(tokenizer_without({"[MASK]", "[CLS]", "[SEP]", "[PAD]"})))
    assert "[MASK], [CLS], [SEP], [PAD]" in str(e.value)


def test_missing_tokenizer_fails_fast_without_hub_lookup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in (str(tmp_path / "absent"), "absent-tokenizer", "./absent", "runs/tok"):
        with pytest.raises(UserError, match="is not a directory"):
            load_tokenizer(name)


def test_output_folder_is_protected(tmp_path, tiny_corpus):
    out = tmp_path / "tok"
    train_tokenizer([str(tiny_corpus)], vocab_size=300, output=str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        train_tokenizer([str(tiny_corpus)], vocab_size=400, output=str(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    train_tokenizer([str(tiny_corpus)], vocab_size=400, output=str(out), overwrite=True)
    assert len(load_tokenizer(str(out))) > 300
    assert not list(tmp_path.glob("tok.*"))  # no temporary or old folder left beside it

    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds no tokenizer.json"):
        train_tokenizer([str(tiny_corpus)], vocab_size=300, output=str(stranger), overwrite=True)
    assert (stranger / "mine.txt").read_text() == "keep me"


def test_cli_train_tokenizer(tmp_path, tiny_corpus):
    out = tmp_path / "cli-tok"
    cmd = [sys.executable, "-m", "fast_electra_ds", "train-tokenizer", "--input", str(tiny_corpus),
           "--vocab-size", "500", "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "vocab.txt").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2
    assert "error: output" in again.stderr and "--overwrite" in again.stderr
