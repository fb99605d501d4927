"""The benchmark: its analytic cost model against what actually runs, and `bench --smoke` end to
end.

FLOPs: flops.py against torch's FlopCounterMode, which counts the matrix products of the real HF
models (2 per multiply-add, like the analytic model), on small odd shapes: forward and forward +
backward of the discriminator and of the trained generator, the frozen generator's forward
(eval mode: SDPA's CPU flash kernel, counted through bench._flop_counter), a generator with its
head at every position (the peer's way), and a whole joint step. Tolerance 2%: the counts are
expected to agree exactly (element-wise work is in neither), the margin is for a future torch
that counts something extra. Parameters: flops.py's counts against the models' own.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

from fast_electra_ds.bench import _flop_counter
from fast_electra_ds.config import GeneratorConfig, ModelConfig
from fast_electra_ds.data.masking import num_predictions
from fast_electra_ds.method.mlm_head import masked_logits
from fast_electra_ds.method.models import build_discriminator, build_generator, tie_embeddings
from fast_electra_ds.training import flops

TOLERANCE = 0.02
VOCAB, SEQ_LEN, BATCH, MAX_POSITIONS = 97, 20, 3, 32
# embeddings narrower than both widths: both models carry an embedding projection
MODEL = ModelConfig(num_layers=2, hidden_size=48, embedding_size=24, num_heads=3,
                    intermediate_size=80, max_position_embeddings=MAX_POSITIONS)
GENERATOR = GeneratorConfig(num_layers=3, hidden_size=16, num_heads=2, intermediate_size=40)
DISC = flops.Encoder.discriminator(MODEL)
GEN = flops.Encoder.generator(GENERATOR, MODEL.embedding_size)
K = num_predictions(SEQ_LEN, flops.MASK_PROB)


def _models():
    torch.manual_seed(0)
    disc = build_discriminator(MODEL, vocab_size=VOCAB, pad_id=0)
    gen = build_generator(GENERATOR, embedding_size=MODEL.embedding_size,
                          max_position_embeddings=MAX_POSITIONS, vocab_size=VOCAB, pad_id=0)
    return disc, gen


def _inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (BATCH, SEQ_LEN), generator=g)  # [B, L]
    positions = torch.stack([torch.randperm(SEQ_LEN, generator=g)[:K].sort().values
                             for _ in range(BATCH)])  # [B, K]
    return ids, torch.ones_like(ids), positions


def _count(fn) -> int:
    counter = _flop_counter()
    with counter:
        fn()
    return counter.get_total_flops()


def _close(measured: int, analytic: int) -> None:
    assert measured > 0
    assert abs(measured / analytic - 1) <= TOLERANCE, (measured, analytic)


def test_discriminator_flops_forward_and_backward():
    disc, _ = _models()
    disc.train()  # dropout on: SDPA takes the math path, as in training
    ids, mask, _ = _inputs()
    forward = flops.discriminator_flops(DISC, SEQ_LEN) * BATCH
    _close(_count(lambda: disc(input_ids=ids, attention_mask=mask).logits), forward)
    _close(_count(lambda: disc(input_ids=ids, attention_mask=mask).logits.sum().backward()),
           flops.TRAINED * forward)


def test_generator_flops_masked_head_forward_and_backward():
    _, gen = _models()
    gen.train()
    ids, mask, positions = _inputs()
    forward = flops.generator_flops(GEN, SEQ_LEN, K, VOCAB) * BATCH
    _close(_count(lambda: masked_logits(gen, ids, mask, positions)), forward)
    _close(_count(lambda: masked_logits(gen, ids, mask, positions).sum().backward()),
           flops.TRAINED * forward)


def test_frozen_generator_flops_forward():
    _, gen = _models()
    gen.eval()  # as FrozenGenerator runs it: no dropout, SDPA's CPU flash kernel
    gen.requires_grad_(False)
    ids, mask, positions = _inputs()
    with torch.no_grad():
        measured = _count(lambda: masked_logits(gen, ids, mask, positions))
    _close(measured, flops.FROZEN * flops.generator_flops(GEN, SEQ_LEN, K, VOCAB) * BATCH)


def test_generator_flops_head_at_every_position():
    """The peer's generator: the output head over all L positions."""
    _, gen = _models()
    gen.train()
    ids, mask, _ = _inputs()
    _close(_count(lambda: gen(input_ids=ids, attention_mask=mask).logits.sum().backward()),
           flops.TRAINED * flops.generator_flops(GEN, SEQ_LEN, SEQ_LEN, VOCAB) * BATCH)


def test_joint_step_flops():
    """A whole ElectraObjective forward + backward: 3 (D + G), the shared embeddings adding
    nothing (lookups are not matmuls)."""
    from fast_electra_ds.data.masking import Masker
    from fast_electra_ds.method.objectives import ElectraObjective

    disc, gen = _models()
    module = ElectraObjective(gen, disc).train()
    ids, mask, _ = _inputs()
    ids[:, 0], ids[:, -1] = 2, 3
    batch = Masker(seq_len=SEQ_LEN, vocab_size=VOCAB, mask_id=4, special_ids=[0, 1, 2, 3, 4],
                   mask_prob=flops.MASK_PROB)(ids, mask, torch.arange(BATCH))
    assert bool((batch.weights > 0).all())  # full-length rows: every one of the K slots is used

    def step():
        out = module(input_ids=batch.input_ids, masked_ids=batch.masked_ids,
                     attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids,
                     positions=batch.positions, labels=batch.labels, weights=batch.weights,
                     sample_ids=batch.sample_ids, temperature=1.0, seed=0)
        out["loss"].backward()

    analytic = flops.step_flops("electra", DISC, GEN, seq_len=SEQ_LEN, vocab_size=VOCAB)
    _close(_count(step), analytic.total * BATCH)


def test_parameter_counts():
    disc, gen = _models()
    assert flops.discriminator_params(DISC, vocab_size=VOCAB, max_positions=MAX_POSITIONS) == sum(
        p.numel() for p in disc.parameters())
    assert flops.generator_params(GEN, vocab_size=VOCAB, max_positions=MAX_POSITIONS) == sum(
        p.numel() for p in gen.parameters())  # parameters() yields the tied table once
    tie_embeddings(gen, disc)
    shared = {id(p) for p in disc.parameters()}
    own = sum(p.numel() for p in gen.parameters() if id(p) not in shared)
    assert flops.generator_params(GEN, vocab_size=VOCAB, max_positions=MAX_POSITIONS,
                                  with_embeddings=False) == own


def test_paper_accounting_reproduces_the_table():
    """The paper's GFLOP table to 0.1 GFLOP, and its frozen-auxiliary memory to 0.01 GB."""
    for size, (main, aux) in flops.PAPER_SHAPES.items():
        paper = flops.PAPER_GFLOPS[size]
        joint = flops.paper_step_flops("electra", main, aux)
        fast = flops.paper_step_flops("fast-electra", main, aux)
        for got, want in ((joint.main, paper["main"]), (joint.aux, paper["aux_joint"]),
                          (fast.aux, paper["aux_fast"]), (joint.total, paper["total_joint"]),
                          (fast.total, paper["total_fast"])):
            assert abs(got / 1e9 - want) < 0.05, (size, got / 1e9, want)
        _, frozen = flops.step_memory("fast-electra", main, aux, batch=1, seq_len=512,
                                      vocab_size=flops.PAPER_VOCAB, max_positions=512,
                                      precision="bf16", frozen_bytes_per_param=2)
        assert abs(frozen.total / 1e9 - flops.PAPER_MEMORY_GB[size]["aux_fast"]) < 0.01


@pytest.mark.slow
def test_bench_smoke_writes_results(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    result = subprocess.run(
        [sys.executable, "-m", "fast_electra_ds", "bench", "--smoke", "--device", "cpu",
         "--output", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    stem = tmp_path / "bench_cpu_smoke"
    for suffix in (".md", ".csv", "_flops.png", "_memory.png", "_step_time.png"):
        path = stem.with_name(stem.name + suffix)
        assert path.is_file() and path.stat().st_size > 0, path
    report = (tmp_path / "bench_cpu_smoke.md").read_text()
    for heading in ("## Targets", "## 1. Compute", "## 2. Memory", "## 3. Step time"):
        assert heading in report
    assert "fast-electra bench --smoke --device cpu" in report  # the command is recorded
    rows = list(csv.DictReader(open(tmp_path / "bench_cpu_smoke.csv")))
    modes = {r["mode"] for r in rows if r["metric"] == "median_step_ms"}
    assert {"electra", "fast-electra", "disc-only"} <= modes
    # FlopCounterMode's count of each real training step agrees with the analytic one
    counted = {(r["mode"], r["component"]): float(r["value"]) for r in rows
               if r["metric"] == "gflops_flopcounter"}
    analytic = {(r["mode"], r["component"]): float(r["value"]) for r in rows
                if r["metric"] == "gflops_analytic"}
    assert counted.keys() == analytic.keys() and counted
    for key, value in counted.items():
        assert value == pytest.approx(analytic[key], rel=TOLERANCE, abs=1e-9), key
