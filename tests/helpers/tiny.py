"""Tiny models and masked batches, shared by the model, generator, objective and fused tests.

Token ids are laid out as a tokenizer's: the special tokens 0-4 (SPECIAL), ordinary tokens from 5
up to the vocabulary size (VOCAB unless a test needs another).
"""

from __future__ import annotations

import dataclasses

import torch
from transformers import ElectraConfig, ElectraForMaskedLM

from fast_electra_ds.config import GeneratorConfig, ModelConfig
from fast_electra_ds.data.masking import MaskedBatch, Masker
from fast_electra_ds.method.models import build_discriminator, build_generator

VOCAB, SEQ_LEN = 100, 24
SPECIAL = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
# no dropout: two computations of one batch (reference and fused, whole and in halves) must agree
MODEL_CFG = ModelConfig(num_layers=2, hidden_size=32, embedding_size=16, num_heads=2,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout=0.0,
                        attention_dropout=0.0)
GEN_CFG = GeneratorConfig(num_layers=2, hidden_size=24, num_heads=2, intermediate_size=48)


def make_models(vocab: int = VOCAB, *, seed: int = 0, dropout: float = 0.0):
    """(generator, discriminator) of shapes GEN_CFG and MODEL_CFG, initialized from `seed`; the
    discriminator is built first, so its weights do not depend on the generator's shape."""
    torch.manual_seed(seed)
    model_cfg = dataclasses.replace(MODEL_CFG, hidden_dropout=dropout, attention_dropout=dropout)
    disc = build_discriminator(model_cfg, vocab_size=vocab, pad_id=SPECIAL["pad"])
    generator = build_generator(GEN_CFG, model_cfg, vocab_size=vocab, pad_id=SPECIAL["pad"])
    return generator, disc


def electra_mlm(vocab: int = VOCAB, *, seed: int = 0) -> ElectraForMaskedLM:
    """A randomly initialized HF ELECTRA masked LM in eval mode, as a frozen generator."""
    torch.manual_seed(seed)
    return ElectraForMaskedLM(ElectraConfig(
        vocab_size=vocab, embedding_size=16, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
        pad_token_id=SPECIAL["pad"])).eval()


def make_batch(vocab: int = VOCAB, batch: int = 4, seed: int = 0, *, two_segments: bool = True,
               successor_tokens: bool = False, mask_prob: float = 0.15) -> MaskedBatch:
    """`batch` sequences [CLS] ... [SEP] of SEQ_LEN, the last one half padding (so that it has
    unused slots), masked by a Masker with `seed` (sample ids 10**6 * seed onwards).

    two_segments: a [SEP] a third into each full row, token type 1 after it (else one segment).
    successor_tokens: token t is followed by t + 1, a pattern a masked LM learns in a few steps
    (else random tokens).
    """
    g = torch.Generator().manual_seed(seed)
    if successor_tokens:
        start = torch.randint(5, vocab, (batch, 1), generator=g)
        input_ids = 5 + (start - 5 + torch.arange(SEQ_LEN)) % (vocab - 5)  # [B, L]
    else:
        input_ids = torch.randint(5, vocab, (batch, SEQ_LEN), generator=g)  # [B, L]
    input_ids[:, 0], input_ids[:, -1] = SPECIAL["cls"], SPECIAL["sep"]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, SEQ_LEN // 2:] = 0
    input_ids[-1, SEQ_LEN // 2:] = SPECIAL["pad"]
    input_ids[-1, SEQ_LEN // 2 - 1] = SPECIAL["sep"]
    token_type_ids = torch.zeros_like(input_ids)
    if two_segments:
        input_ids[:-1, SEQ_LEN // 3] = SPECIAL["sep"]
        token_type_ids[:-1, SEQ_LEN // 3 + 1:] = 1
    masker = Masker(seq_len=SEQ_LEN, vocab_size=vocab, mask_id=SPECIAL["mask"],
                    special_ids=list(SPECIAL.values()), mask_prob=mask_prob, seed=seed)
    return masker(input_ids, attention_mask, torch.arange(batch) + 10**6 * seed, token_type_ids)
