"""Small model folders in exactly the layout the HF hub uses (config.json, model.safetensors and
the tokenizer's own files), for the masked LMs users bring as generators:

  electra  an ELECTRA generator: WordPiece, lower-casing, [PAD] [UNK] [CLS] [SEP] [MASK] first
  bert     BERT: WordPiece, lower-casing, [PAD] then [unused0..98] then [UNK] [CLS] [SEP] [MASK]
           (ids 100-103, as bert-base-uncased), type vocabulary 2
  roberta  RoBERTa: byte-level BPE (vocab.json + merges.txt), <s> <pad> </s> <unk> <mask>, and
           type_vocab_size 1, as roberta-base

The tokenizers are built from a corpus (whole-word vocabulary plus every character, so nothing is
[UNK]); the weights are random and tiny (2 layers x 32).
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

ARCHS = ("electra", "bert", "roberta")
_SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def make_hub_folder(arch: str, out: Path, corpus: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForMaskedLM,
        ElectraConfig,
        ElectraForMaskedLM,
        RobertaConfig,
        RobertaForMaskedLM,
    )

    out.mkdir(parents=True, exist_ok=True)
    text = corpus.read_text(encoding="utf-8")[:300_000]
    if arch == "roberta":
        from tokenizers import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator([text], vocab_size=1000, show_progress=False,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        bpe.save_model(str(out))  # vocab.json, merges.txt
        (out / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    else:
        words = collections.Counter(re.findall(r"\w+|[^\w\s]", text.lower()))
        chars = sorted({c for w in words for c in w})
        unused = [f"[unused{i}]" for i in range(99)] if arch == "bert" else []
        vocab = (["[PAD]", *unused, "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars
                 + ["##" + c for c in chars]
                 + [w for w, _ in words.most_common(600) if w not in chars])
        (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        (out / "config.json").write_text(json.dumps({"model_type": arch}))
        (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    # AutoTokenizer from the files alone, as from the hub; then its own full set of files
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.save_pretrained(out)
    torch.manual_seed(seed)
    if arch == "electra":
        model = ElectraForMaskedLM(ElectraConfig(vocab_size=len(tok), embedding_size=32,
                                                 max_position_embeddings=130, **_SHAPE))
    elif arch == "bert":
        model = BertForMaskedLM(BertConfig(vocab_size=len(tok), max_position_embeddings=130,
                                           **_SHAPE))
    else:
        model = RobertaForMaskedLM(RobertaConfig(
            vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, type_vocab_size=1, max_position_embeddings=132,
            **_SHAPE))
    model.save_pretrained(out)
    return out
