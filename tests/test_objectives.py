"""objectives.py: the RTD reference loss, the three mode objectives, metric aggregation."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.tiny import SPECIAL, VOCAB, make_batch, make_models
from torch.nn import functional as F

from fast_electra_ds.data.masking import MaskedBatch
from fast_electra_ds.method import frozen_generator, mlm_head, sampling
from fast_electra_ds.method.objectives import (ElectraObjective, FastElectraObjective,
                                                MLMObjective, rtd_loss)
from fast_electra_ds.metrics import finalize_metrics, sum_metrics


def learnable_batch(batch: int = 4) -> MaskedBatch:
    """Two-segment sequences of a pattern the objectives learn (token t followed by t + 1), with
    25% of the tokens masked."""
    return make_batch(batch=batch, successor_tokens=True, mask_prob=0.25)


def batch_kwargs(b: MaskedBatch) -> dict:
    return dict(input_ids=b.input_ids, masked_ids=b.masked_ids, attention_mask=b.attention_mask,
                token_type_ids=b.token_type_ids, positions=b.positions, labels=b.labels,
                weights=b.weights, sample_ids=b.sample_ids)


def test_rtd_loss_matches_masked_bce_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 9, generator=g) * 3
    labels = (torch.rand(3, 9, generator=g) < 0.3).float()
    mask = torch.ones(3, 9, dtype=torch.int64)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    loss, counts = rtd_loss(logits, labels, mask)
    real = mask.bool()
    expected = F.binary_cross_entropy_with_logits(logits[real], labels[real])
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)

    pred, target = logits[real] > 0, labels[real] > 0.5
    assert float(counts["rtd_replaced_total"]) == target.sum()
    assert float(counts["rtd_replaced_correct"]) == (pred & target).sum()
    assert float(counts["rtd_original_total"]) == (~target).sum()
    assert float(counts["rtd_original_correct"]) == (~pred & ~target).sum()
    assert float(counts["rtd_loss_sum"]) == pytest.approx(float(expected) * int(real.sum()),
                                                          rel=1e-6)
    # padding logits, however wild, do not matter; low-precision logits are scored in fp32
    wild = torch.where(real, logits, 1e4)
    torch.testing.assert_close(rtd_loss(wild, labels, mask)[0], expected)
    bf16_loss, _ = rtd_loss(logits.bfloat16(), labels, mask)
    assert bf16_loss.dtype == torch.float32
    torch.testing.assert_close(bf16_loss, F.binary_cross_entropy_with_logits(
        logits.bfloat16().float()[real], labels[real]))


def test_finalize_metrics_over_micro_batches_equals_whole_batch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 7, generator=g)
    labels = (torch.rand(6, 7, generator=g) < 0.4).float()
    mask = torch.ones(6, 7, dtype=torch.int64)
    mask[2, 3:] = 0
    whole = finalize_metrics([rtd_loss(logits, labels, mask)[1]])
    parts = finalize_metrics([rtd_loss(logits[i:i + 2], labels[i:i + 2], mask[i:i + 2])[1]
                              for i in (0, 2, 4)])
    assert whole.keys() == parts.keys()
    for key in whole:
        assert parts[key] == pytest.approx(whole[key], rel=1e-6), key
    assert whole["rtd_loss"] == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits[mask.bool()], labels[mask.bool()])))
    assert sum_metrics([]) == {}


def test_fast_electra_objective_trains_discriminator_on_frozen_generator_output(tmp_path):
    generator, disc = make_models()
    generator.save_pretrained(tmp_path)
    frozen = frozen_generator.FrozenGenerator.load(str(tmp_path), vocab_size=VOCAB,
                                                   special_ids=SPECIAL, logger=lambda msg: None)
    objective = FastElectraObjective(disc)
    batch = learnable_batch()
    corrupted, rtd_labels, gen_metrics = frozen.corrupt(batch, temperature=2.0, seed=7)
    out = objective(corrupted_ids=corrupted, attention_mask=batch.attention_mask,
                    rtd_labels=rtd_labels, token_type_ids=batch.token_type_ids)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()  # the generator's outputs are usable in the discriminator's graph
    assert disc.electra.embeddings.word_embeddings.weight.grad is not None
    assert all(p.grad is None for p in frozen.hf_model.parameters())

    metrics = finalize_metrics([{**gen_metrics, **out}])
    assert metrics["loss"] == pytest.approx(out["loss"].item())
    assert metrics["rtd_loss"] == pytest.approx(out["loss"].item())
    assert metrics["num_slots"] == float((batch.weights > 0).sum())
    # with a single sequence-level corruption, replaced tokens seen by the loss = replaced slots
    total = sum_metrics([out])
    assert total["rtd_replaced_total"] == metrics["replace_rate"] * metrics["num_slots"]
    assert 0 <= metrics["mlm_accuracy"] <= 1 and 0 < metrics["gen_entropy"] <= math.log(VOCAB)


def test_electra_objective_step_updates_both_models_and_keeps_embeddings_shared():
    generator, disc = make_models()
    objective = ElectraObjective(generator, disc, rtd_weight=50.0)
    shared = disc.electra.embeddings.word_embeddings.weight
    assert generator.electra.embeddings.word_embeddings.weight is shared
    watched = {
        "shared embeddings": shared,
        "generator layer": generator.electra.encoder.layer[0].attention.self.query.weight,
        "generator head": generator.generator_predictions.dense.weight,
        "discriminator layer": disc.electra.encoder.layer[0].attention.self.query.weight,
        "discriminator head": disc.discriminator_predictions.dense.weight,
    }
    before = {k: v.detach().clone() for k, v in watched.items()}
    opt = torch.optim.AdamW(objective.parameters(), lr=1e-3)

    out = objective(**batch_kwargs(learnable_batch()), temperature=1.0, seed=3)
    assert torch.isfinite(out["loss"])
    metrics = finalize_metrics([out])
    assert metrics["loss"] == pytest.approx(metrics["mlm_loss"] + 50.0 * metrics["rtd_loss"],
                                            rel=1e-5)
    for key in ("mlm_accuracy", "replace_rate", "rtd_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert 0.0 < metrics["gen_entropy"] <= math.log(VOCAB)

    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    for name, param in watched.items():
        assert not torch.equal(param, before[name]), f"{name} did not change"
    assert generator.get_input_embeddings().weight is disc.get_input_embeddings().weight
    assert generator.generator_lm_head.weight is shared
    assert len(list(objective.parameters())) == len({id(p) for p in objective.parameters()})
    # HF's own re-tying (run by save/load) keeps pointing at the shared table
    generator.tie_weights()
    assert generator.generator_lm_head.weight is shared


def test_electra_objective_halves_agree_with_its_forward():
    """sampling.corrupt + rtd_outputs (how evaluation runs the two halves) reproduce forward()."""
    generator, disc = make_models()
    objective = ElectraObjective(generator, disc, rtd_weight=50.0).eval()
    batch = learnable_batch()
    with torch.no_grad():
        out = objective(**batch_kwargs(batch), temperature=1.5, seed=11)
        corrupted, rtd_labels, gen_metrics = sampling.corrupt(generator, batch, temperature=1.5,
                                                              seed=11)
        halves = objective.rtd_outputs(corrupted, batch.attention_mask, rtd_labels,
                                       batch.token_type_ids)
    assert halves["logits"].shape == batch.input_ids.shape
    for key, value in {**gen_metrics, **halves}.items():
        if key not in ("loss", "logits"):
            assert torch.equal(value, out[key]), key


def test_mlm_objective_learns_and_saves_a_loadable_generator(tmp_path):
    generator, _ = make_models()
    objective = MLMObjective(generator)
    batch = learnable_batch(batch=8)
    kwargs = dict(masked_ids=batch.masked_ids, attention_mask=batch.attention_mask,
                  token_type_ids=batch.token_type_ids, positions=batch.positions,
                  labels=batch.labels, weights=batch.weights)
    opt = torch.optim.AdamW(objective.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        out = objective(**kwargs)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert finalize_metrics([out])["mlm_loss"] == pytest.approx(losses[-1], rel=1e-6)

    # the trained generator is directly a FrozenGenerator for mode=fast-electra
    generator.save_pretrained(tmp_path)
    frozen = frozen_generator.FrozenGenerator.load(str(tmp_path), vocab_size=VOCAB,
                                                   special_ids=SPECIAL, logger=lambda msg: None)
    generator.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            mlm_head.masked_logits(frozen.model, batch.masked_ids, batch.attention_mask,
                                   batch.positions),
            mlm_head.masked_logits(generator, batch.masked_ids, batch.attention_mask,
                                   batch.positions))
