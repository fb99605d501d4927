"""Existing masked LMs with their own tokenizers as Fast-ELECTRA's generator, end to end:

    fast-electra prepare-data --tokenizer GEN ...  ->  pretrain generator.path=GEN  ->  export

for an ELECTRA generator, a BERT and a RoBERTa masked LM, each a folder in the hub's layout
(tests/helpers/hub_folders.py): WordPiece with [unused*] tokens and lower-casing, byte-level BPE
with <s> </s> <pad> <mask>.
"""

from __future__ import annotations

import json
import math

import pytest
from helpers.hub_folders import ARCHS, make_hub_folder

from fast_electra_ds.cli import main
from fast_electra_ds.data.tokenizer import load_tokenizer

SPECIALS = {  # the data's special ids, as each tokenizer has them
    "electra": {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4},
    "bert": {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103},
    "roberta": {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": 4},
}


@pytest.mark.parametrize("arch", ARCHS)
def test_a_hub_generator_with_its_own_tokenizer_trains_and_exports(arch, tmp_path, tiny_corpus,
                                                                   capsys):
    gen = make_hub_folder(arch, tmp_path / arch, tiny_corpus)
    data = tmp_path / "data"
    assert main(["prepare-data", "--input", str(tiny_corpus), "--tokenizer", str(gen),
                 "--seq-len", "64", "--output", str(data), "--valid-fraction", "0.05"]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["special_token_ids"] == SPECIALS[arch]
    tok = load_tokenizer(str(gen))
    assert manifest["vocab_size"] == len(tok)
    if arch != "roberta":  # WordPiece lower-cases, and the corpus is all in-vocabulary
        assert tok("In THE Beginning")["input_ids"] == tok("in the beginning")["input_ids"]
        assert tok.unk_token_id not in tok("And God said, Let there be light")["input_ids"]

    run = tmp_path / "run"
    assert main(["pretrain", "--config", "tiny", f"run_dir={run}", f"data.paths={data}",
                 f"generator.path={gen}", "device=cpu", "train.steps=4", "eval.every=4",
                 "eval.num_sequences=16", "train.global_batch_size=8",
                 "train.micro_batch_size=8", "logging.log_every=1",
                 "logging.wandb=disabled"]) == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and 0 < r["replace_rate"] <= 1 for r in train)
    assert "generator: " in capsys.readouterr().out

    out = tmp_path / "export"
    assert main(["export", "--run", str(run), "--output", str(out)]) == 0
    from transformers import AutoTokenizer, ElectraForPreTraining

    disc = ElectraForPreTraining.from_pretrained(out / "discriminator")
    exported = AutoTokenizer.from_pretrained(out / "discriminator")
    assert disc.config.vocab_size == len(exported) == len(tok)
    assert exported.get_vocab() == tok.get_vocab()
    assert exported.mask_token == tok.mask_token
