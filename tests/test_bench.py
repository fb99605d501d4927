"""The benchmark suite (benchmarks/): its analytic cost model against what actually runs, its
disc-only mode, and `python benchmarks/bench.py --smoke` end to end.

FLOPs: the library's flops.py and the suite's cost_model.py against torch's FlopCounterMode, which
counts the matrix products of the real HF models (2 per multiply-add, like the analytic model),
on small odd shapes: forward and forward + backward of the discriminator and of the trained
generator, the frozen generator's forward (eval mode: SDPA's CPU flash kernel, counted through
measure.flop_counter), a generator with its head at every position (the peer's way), and a whole
joint step. Tolerance 2%: the counts are expected to agree exactly (element-wise work is in
neither), the margin is for a future torch that counts something extra. Parameters:
cost_model.py's counts against the models' own.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.suite import cost_model as cm
from benchmarks.suite.measure import flop_counter
from fast_electra_ds.config import GeneratorConfig, ModelConfig
from fast_electra_ds.data.masking import Masker, num_predictions
from fast_electra_ds.method import flops
from fast_electra_ds.method.mlm_head import masked_logits
from fast_electra_ds.method.models import (build_discriminator, build_generator,
                                           tie_embeddings)

REPO = Path(__file__).resolve().parent.parent


TOLERANCE = 0.02
VOCAB, SEQ_LEN, BATCH, MAX_POSITIONS = 97, 20, 3, 32
SPECIAL_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
# embeddings narrower than both widths: both models carry an embedding projection
MODEL = ModelConfig(num_layers=2, hidden_size=48, embedding_size=24, num_heads=3,
                    intermediate_size=80, max_position_embeddings=MAX_POSITIONS)
GENERATOR = GeneratorConfig(num_layers=3, hidden_size=16, num_heads=2, intermediate_size=40)
DISC = flops.Encoder.discriminator(MODEL)
GEN = flops.Encoder.generator(GENERATOR, MODEL.embedding_size)
K = num_predictions(SEQ_LEN, cm.MASK_PROB)


@pytest.fixture
def torch_threads():
    """Puts torch's intra-op thread count back after the test: later tests in this process
    depend on it (the golden runs' last bits do)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _models():
    torch.manual_seed(0)
    disc = build_discriminator(MODEL, vocab_size=VOCAB, pad_id=0)
    gen = build_generator(GENERATOR, MODEL, vocab_size=VOCAB, pad_id=0)
    return disc, gen


def _inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (BATCH, SEQ_LEN), generator=g)  # [B, L]
    positions = torch.stack([torch.randperm(SEQ_LEN, generator=g)[:K].sort().values
                             for _ in range(BATCH)])  # [B, K]
    return ids, torch.ones_like(ids), positions


def _masked_batch():
    """A masked batch of full-length rows [CLS] ... [SEP]: every one of the K slots is used."""
    ids, mask, _ = _inputs()
    ids[:, 0], ids[:, -1] = SPECIAL_IDS["cls"], SPECIAL_IDS["sep"]
    batch = Masker(seq_len=SEQ_LEN, vocab_size=VOCAB, mask_id=SPECIAL_IDS["mask"],
                   special_ids=list(SPECIAL_IDS.values()),
                   mask_prob=cm.MASK_PROB)(ids, mask, torch.arange(BATCH))
    assert bool((batch.weights > 0).all())
    return batch


def _count(fn) -> int:
    counter = flop_counter()
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
    peer = cm.Auxiliary(cm.Role.TRAINED, head_everywhere=True)
    _close(_count(lambda: gen(input_ids=ids, attention_mask=mask).logits.sum().backward()),
           cm.step_flops(DISC, GEN, peer, seq_len=SEQ_LEN, vocab_size=VOCAB).aux * BATCH)


def test_joint_step_flops():
    """A whole ElectraObjective forward + backward: 3 (D + G), the shared embeddings adding
    nothing (lookups are not matmuls)."""
    from fast_electra_ds.method.objectives import ElectraObjective

    disc, gen = _models()
    module = ElectraObjective(gen, disc).train()
    batch = _masked_batch()

    def step():
        out = module(input_ids=batch.input_ids, masked_ids=batch.masked_ids,
                     attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids,
                     positions=batch.positions, labels=batch.labels, weights=batch.weights,
                     sample_ids=batch.sample_ids, temperature=1.0, seed=0)
        out["loss"].backward()

    analytic = cm.step_flops(DISC, GEN, cm.JOINT, seq_len=SEQ_LEN, vocab_size=VOCAB)
    _close(_count(step), analytic.total * BATCH)


def test_step_flops_by_role():
    """The auxiliary part scales with the generator's role: trained 3x, frozen 1x, none 0; the
    main part does not depend on it."""
    shape = dict(seq_len=SEQ_LEN, vocab_size=VOCAB)
    forward = flops.generator_flops(GEN, SEQ_LEN, K, VOCAB)
    main = flops.TRAINED * flops.discriminator_flops(DISC, SEQ_LEN)
    for aux, multiplier in ((cm.JOINT, 3), (cm.FAST, 1), (cm.NO_GENERATOR, 0)):
        assert cm.step_flops(DISC, GEN, aux, **shape) == cm.StepFlops(main, multiplier * forward)
    main_mem, aux_mem = cm.step_memory(DISC, GEN, cm.NO_GENERATOR, batch=BATCH,
                                       max_positions=MAX_POSITIONS, precision="fp32",
                                       frozen_bytes_per_param=4, **shape)
    assert aux_mem is None and cm.peak_bytes(main_mem, aux_mem) == main_mem.total


def test_parameter_counts():
    disc, gen = _models()
    assert cm.discriminator_params(DISC, vocab_size=VOCAB, max_positions=MAX_POSITIONS) == sum(
        p.numel() for p in disc.parameters())
    assert cm.generator_params(GEN, vocab_size=VOCAB, max_positions=MAX_POSITIONS) == sum(
        p.numel() for p in gen.parameters())  # parameters() yields the tied table once
    tie_embeddings(gen, disc)
    shared = {id(p) for p in disc.parameters()}
    own = sum(p.numel() for p in gen.parameters() if id(p) not in shared)
    assert cm.generator_params(GEN, vocab_size=VOCAB, max_positions=MAX_POSITIONS,
                               with_embeddings=False) == own


def test_paper_accounting_reproduces_the_table():
    """The paper's GFLOP table to 0.1 GFLOP, and its frozen-auxiliary memory to 0.01 GB."""
    for size, (main, aux) in cm.PAPER_SHAPES.items():
        paper = cm.PAPER_GFLOPS[size]
        joint = cm.paper_step_flops(main, aux, cm.JOINT)
        fast = cm.paper_step_flops(main, aux, cm.FAST)
        for got, want in ((joint.main, paper["main"]), (joint.aux, paper["aux_joint"]),
                          (fast.aux, paper["aux_fast"]), (joint.total, paper["total_joint"]),
                          (fast.total, paper["total_fast"])):
            assert abs(got / 1e9 - want) < 0.05, (size, got / 1e9, want)
        _, frozen = cm.step_memory(main, aux, cm.FAST, batch=1, seq_len=512,
                                   vocab_size=cm.PAPER_VOCAB, max_positions=512,
                                   precision="bf16", frozen_bytes_per_param=2)
        assert abs(frozen.total / 1e9 - cm.PAPER_MEMORY_GB[size]["aux_fast"]) < 0.01


def test_disc_only_replaces_the_masked_positions(tmp_path):
    """The benchmark's disc-only mode is a library Mode: uniform draws at exactly the used
    slots, the discriminator's inputs for FastElectraObjective, and its FLOPs the
    discriminator's alone."""
    from benchmarks.suite.modes import DiscOnly
    from benchmarks.suite.workload import Spec

    spec = Spec(recipe="tiny", batch=BATCH, seq_len=SEQ_LEN, vocab_size=VOCAB, device="cpu",
                threads=0, generator_dir=str(tmp_path))
    cfg = spec.config()
    mode = DiscOnly(cfg, vocab_size=VOCAB, special_ids=SPECIAL_IDS, device=torch.device("cpu"))
    batch = _masked_batch()
    torch.manual_seed(0)
    inputs, outside = mode.engine_inputs(batch, mode.temperature(0.0))
    assert outside == {}
    changed = inputs["corrupted_ids"] != batch.input_ids  # [B, L]
    selected = torch.zeros_like(changed).scatter_(1, batch.positions, True)  # [B, L]
    assert not bool((changed & ~selected).any())  # nothing outside the masked positions
    assert torch.equal(inputs["rtd_labels"], changed.float())
    out = mode.build()(**inputs)
    assert torch.isfinite(out["loss"])
    assert mode.step_flops() == cfg.train.global_batch_size * flops.TRAINED * \
        flops.discriminator_flops(flops.Encoder.discriminator(cfg.model), SEQ_LEN)


def test_suite_threads(torch_threads):
    """On a CPU the suite runs on CPU_THREADS, on a GPU on torch's default; threads=0 leaves
    torch's count as it is."""
    from benchmarks.bench import SUITES, suite_spec
    from benchmarks.suite.workload import CPU_THREADS, set_threads

    before = torch.get_num_threads()
    assert suite_spec(SUITES["smoke"], None, "cuda", "unused").threads == 0
    set_threads(suite_spec(SUITES["smoke"], None, "cpu", "unused", threads=0))
    assert torch.get_num_threads() == before
    spec = suite_spec(SUITES["smoke"], None, "cpu", "unused")
    assert spec.threads == CPU_THREADS
    set_threads(spec)
    assert torch.get_num_threads() == CPU_THREADS


@pytest.mark.slow
def test_bench_smoke_writes_results(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--smoke", "--device", "cpu",
         "--output", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    stem = tmp_path / "bench_cpu_smoke"
    for suffix in (".md", ".csv", "_flops.png", "_memory.png", "_step_time.png"):
        path = stem.with_name(stem.name + suffix)
        assert path.is_file() and path.stat().st_size > 0, path
    report = (tmp_path / "bench_cpu_smoke.md").read_text()
    for heading in ("## Headline", "## Targets", "## 1. Compute", "## 2. Memory",
                    "## 3. Step time"):
        assert heading in report
    assert "python benchmarks/bench.py --smoke --device cpu" in report  # the command is recorded
    assert "$" not in report  # every placeholder of the templates filled
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
