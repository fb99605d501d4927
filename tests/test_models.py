"""models.py: shapes from config, shared embeddings, AdamW parameter groups."""

from __future__ import annotations

import torch
from helpers.tiny import SPECIAL, VOCAB, make_models
from torch import nn

from fast_electra_ds.method.models import param_groups, tie_embeddings

PAD = SPECIAL["pad"]


def make_pair() -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) with the library's default dropout, as a training run has."""
    return make_models(dropout=0.1)


def test_discriminator_follows_config():
    _, disc = make_pair()
    c = disc.config
    assert (c.num_hidden_layers, c.hidden_size, c.embedding_size, c.num_attention_heads,
            c.intermediate_size, c.max_position_embeddings, c.vocab_size, c.pad_token_id) == \
        (2, 32, 16, 2, 64, 64, VOCAB, PAD)
    assert len(disc.electra.encoder.layer) == 2
    assert disc.electra.embeddings.word_embeddings.weight.shape == (VOCAB, 16)
    ids = torch.randint(5, VOCAB, (3, 10))
    assert disc(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (3, 10)


def test_generator_follows_config():
    gen, _ = make_pair()
    c = gen.config
    assert (c.num_hidden_layers, c.hidden_size, c.embedding_size, c.num_attention_heads,
            c.intermediate_size, c.vocab_size) == (2, 24, 16, 2, 48, VOCAB)
    # the output layer is the word embedding table, as in ELECTRA
    assert gen.generator_lm_head.weight is gen.electra.embeddings.word_embeddings.weight
    ids = torch.randint(5, VOCAB, (3, 10))
    assert gen(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (3, 10, VOCAB)


def test_tied_embeddings_are_the_same_tensors():
    gen, disc = make_pair()
    tie_embeddings(gen, disc)
    ge, de = gen.electra.embeddings, disc.electra.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
        assert getattr(ge, name).weight is getattr(de, name).weight, name
        assert getattr(ge, name).weight.data_ptr() == getattr(de, name).weight.data_ptr()
    assert gen.generator_lm_head.weight is de.word_embeddings.weight
    # the projections to each model's own width stay separate
    assert gen.electra.embeddings_project is not disc.electra.embeddings_project

    # an update made through the generator alone shows up in the discriminator
    before = de.word_embeddings.weight.detach().clone()
    opt = torch.optim.SGD(gen.parameters(), lr=1.0)
    ids = torch.randint(5, VOCAB, (2, 12))
    gen(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.logsumexp(-1).mean().backward()
    opt.step()
    assert not torch.equal(de.word_embeddings.weight, before)
    assert torch.equal(de.word_embeddings.weight, gen.get_input_embeddings().weight)


def test_param_groups_no_decay_on_norms_and_biases_and_no_duplicates():
    gen, disc = make_pair()
    tie_embeddings(gen, disc)
    both = nn.ModuleDict({"generator": gen, "discriminator": disc})
    disc.electra.encoder.layer[0].output.dense.weight.requires_grad_(False)  # frozen: left out

    decay, no_decay = param_groups(both, weight_decay=0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(ids) == len(set(ids)), "a tied parameter is listed twice"
    trainable = {id(p) for p in both.parameters() if p.requires_grad}
    assert set(ids) == trainable

    no_decay_ids = {id(p) for p in no_decay["params"]}
    for name, param in both.named_parameters(remove_duplicate=False):
        if not param.requires_grad:
            continue
        expect_no_decay = name.endswith("bias") or "LayerNorm" in name
        assert (id(param) in no_decay_ids) == expect_no_decay, name
    assert id(disc.electra.embeddings.word_embeddings.weight) not in no_decay_ids
    assert id(disc.electra.embeddings.LayerNorm.weight) in no_decay_ids
