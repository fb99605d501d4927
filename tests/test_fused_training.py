"""Training with the fused kernels (config kernels=on) against training without them (off).

The fused sampler (generator.corrupt, FrozenGenerator) and the fused RTD loss (the discriminator
objectives) must compute what the torch references compute. Without a GPU the kernels run on CPU
under TRITON_INTERPRET=1, in a child process (tests/helpers/kernel_testing.py); everything is fp32.

Tolerances:
  corruption   identical corrupted ids, RTD labels and counts, on inputs whose draws are
               decided by more than GAP (helpers.kernel_testing.draw_margin) and whose two
               largest logits (the argmax) differ by more than GAP (asserted: a near-tie could
               be reordered by the kernel's summation order);
               entropy sum rtol 1e-5 (an fp32 reduction in both paths)
  objectives   loss rtol 1e-5 / atol 1e-6, parameter gradients rtol 1e-5 / atol 1e-7: the RTD
               kernel's own fp32 tolerances, which hold after its dx is carried back through the
               encoder (measured on CPU: at most 1/10 of the gradient tolerance used)
  training     4 optimizer steps of the tiny recipe: per-step losses rtol 1e-5 / atol 1e-6
               (measured on CPU: at most 1e-7 relative); the same replaced tokens, hence equal
               replace rate, RTD class shares and generator accuracy
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny
from transformers import ElectraConfig, ElectraForMaskedLM

from fast_electra_ds.config import load_config
from fast_electra_ds.data.masking import MaskedBatch
from fast_electra_ds.errors import UserError
from fast_electra_ds.method import frozen_generator, mlm_head, sampling
from fast_electra_ds.method import kernel_switch as fused_kernels
from fast_electra_ds.method.kernel_switch import resolve_kernels
from fast_electra_ds.method.models import build_generator
from fast_electra_ds.method.objectives import ElectraObjective, FastElectraObjective

pytest.importorskip("triton")
from fast_electra_kernels._dispatch import interpreting  # noqa: E402
from helpers.kernel_testing import (  # noqa: E402, F401 (a test pytest collects here)
    KERNEL_DEVICE as DEVICE, draw_margin, kernel_test, test_kernels_in_interpreter_process)

GAP = 1e-5
VOCAB = 300  # several of the sampler's 128-column tiles, the last partial
LOSS_TOL = dict(rtol=1e-5, atol=1e-6)
GRAD_TOL = dict(rtol=1e-5, atol=1e-7)
TRAIN_TOL = dict(rtol=1e-5, atol=1e-6)


def make_batch(seed: int = 0) -> MaskedBatch:
    """Six random two-segment sequences on DEVICE, the last with unused slots."""
    out = tiny.make_batch(VOCAB, batch=6, seed=seed)
    assert (out.weights == 0).any() and (out.weights > 0).any()
    return out.to(DEVICE)


def assert_no_near_ties(model, batch: MaskedBatch, temperature: float, seed: int) -> None:
    """The premise of exact comparisons: clear winners for the draw and the argmax everywhere."""
    logits = mlm_head.masked_logits(model, batch.masked_ids, batch.attention_mask,
                                    batch.positions).float()  # [B, K, V]
    b, k, v = logits.shape
    z = logits.reshape(b * k, v) / temperature
    assert draw_margin(z, seed, sampling.noise_rows(batch.sample_ids, k)).min() > GAP
    top2 = logits.reshape(b * k, v).topk(2, dim=-1).values
    assert (top2[:, 0] - top2[:, 1]).min() > GAP


# --------------------------------------------------------------------------------------------
# (a) corruption: the fused sampler gives the eager sampler's draws and metrics


@kernel_test
@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_fused_corruption_matches_eager(temperature, monkeypatch):
    model, batch = tiny.electra_mlm(VOCAB).to(DEVICE), make_batch()
    assert_no_near_ties(model, batch, temperature, seed=42)
    # a random generator is almost never right: make the label its prediction at every other
    # slot, so that mlm_correct (the argmax) is compared on hits as well as misses
    predicted = mlm_head.masked_logits(model, batch.masked_ids, batch.attention_mask,
                                       batch.positions).argmax(-1)  # [B, K]
    every_other = torch.arange(batch.labels.numel(), device=DEVICE).view_as(batch.labels) % 2 == 0
    batch.labels = torch.where(every_other, predicted, batch.labels)
    eager = sampling.corrupt(model, batch, temperature=temperature, seed=42)
    assert eager[2]["mlm_correct"] > 0

    def never(*args, **kwargs):
        raise AssertionError("the fused path built [B, K, V] logits")

    # the fused path goes through FrozenGenerator, as in mode=fast-electra, and never touches
    # the logits path
    monkeypatch.setattr(sampling, "masked_logits", never)
    monkeypatch.setattr(sampling, "sample_replacements", never)
    frozen = frozen_generator.FrozenGenerator(model, device=torch.device(DEVICE), source="test",
                                              runtime="test", fused=True)
    fused = frozen.corrupt(batch, temperature=temperature, seed=42)

    assert torch.equal(fused[0], eager[0])  # corrupted ids [B, L]
    assert torch.equal(fused[1], eager[1])  # RTD labels [B, L]
    assert fused[1].sum() > 0
    assert fused[2].keys() == eager[2].keys()
    for name in ("num_slots", "mlm_correct", "gen_num_replaced"):
        assert fused[2][name].item() == eager[2][name].item(), name
    torch.testing.assert_close(fused[2]["gen_entropy_sum"], eager[2]["gen_entropy_sum"],
                               rtol=1e-5, atol=0)


# --------------------------------------------------------------------------------------------
# (b) objectives: the fused RTD loss gives the reference's loss, metrics and gradients


def objective_pair(mode: str):
    """(reference, fused) objectives with identical weights, on DEVICE."""
    generator, disc = tiny.make_models(VOCAB)
    if mode == "fast-electra":
        reference = FastElectraObjective(disc)
    else:
        reference = ElectraObjective(generator, disc)
    fused = copy.deepcopy(reference)
    fused.fused = True
    return reference.to(DEVICE), fused.to(DEVICE)


def objective_inputs(mode: str, batch: MaskedBatch) -> dict:
    if mode == "fast-electra":
        g = torch.Generator().manual_seed(3)
        rtd_labels = (torch.rand(batch.input_ids.shape, generator=g) < 0.3).float()
        return dict(corrupted_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    rtd_labels=rtd_labels.to(DEVICE), token_type_ids=batch.token_type_ids)
    return dict(input_ids=batch.input_ids, masked_ids=batch.masked_ids,
                attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids,
                positions=batch.positions, labels=batch.labels, weights=batch.weights,
                sample_ids=batch.sample_ids, temperature=1.0, seed=5)


@kernel_test
@pytest.mark.parametrize("mode", ["fast-electra", "electra"])
def test_fused_objective_matches_reference(mode, monkeypatch):
    reference, fused = objective_pair(mode)
    inputs = objective_inputs(mode, make_batch(seed=2))
    calls = []
    kernel = fused_kernels.rtd_loss
    monkeypatch.setattr(fused_kernels, "rtd_loss", lambda *a: calls.append(1) or kernel(*a))
    ref_out = reference(**inputs)
    assert not calls
    fused_out = fused(**inputs)
    assert len(calls) == 1
    ref_out["loss"].backward()
    fused_out["loss"].backward()

    assert fused_out.keys() == ref_out.keys()
    torch.testing.assert_close(fused_out["loss"], ref_out["loss"], **LOSS_TOL)
    for name, value in ref_out.items():
        if name.endswith(("_total", "_correct", "num_slots", "num_replaced", "micro_batches")):
            assert fused_out[name].item() == value.item(), name
        elif name != "loss":
            torch.testing.assert_close(fused_out[name], value, **LOSS_TOL, msg=name)
    assert ref_out["rtd_replaced_total"] > 0 and ref_out["rtd_original_total"] > 0
    ref_params = dict(reference.named_parameters())
    for name, p in fused.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, ref_params[name].grad, **GRAD_TOL, msg=name)


# --------------------------------------------------------------------------------------------
# (c) training end to end: kernels=on and kernels=off give the same losses


@pytest.fixture(scope="module")
def random_generator(tmp_path_factory, tiny_tokenizer) -> Path:
    """A randomly initialized masked LM with the tiny recipe's generator shape and the tiny
    dataset's tokenizer: comparing the two paths needs a generator, not a good one."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer))
    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = build_generator(cfg.generator, cfg.model, vocab_size=len(tok),
                            pad_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("generator") / "random"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def train_records(run_dir: Path, dataset: Path, generator: Path, mode: str, kernels: str,
                  ds_config: str) -> list[dict]:
    from fast_electra_ds.training.loop import pretrain

    cfg = load_config("tiny", [
        f"run_dir={run_dir}", f"data.paths={dataset}", f"generator.path={generator}",
        f"mode={mode}", f"kernels={kernels}", f"device={DEVICE}", "train.steps=4",
        "train.global_batch_size=4", "train.micro_batch_size=4", "model.hidden_dropout=0",
        "model.attention_dropout=0", "eval.every=0", "logging.log_every=1",
        "optim.warmup_steps=1", "generator.inference_dtype=fp32", f"ds_config={ds_config}"])
    cfg.validate()
    pretrain(cfg)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


@kernel_test
@pytest.mark.parametrize("mode, ds_config", [
    ("fast-electra", "ds_configs/cpu_fp32.json"),
    ("electra", "ds_configs/cpu_fp32.json"),
    # ZeRO-3 without persistent parameters: the fused RTD loss reads the final projection's
    # weight outside its module, which DeepSpeed must gather on access
    ("fast-electra", "ds_configs/cpu_zero3_fp32.json"),
])
def test_training_with_kernels_matches_training_without(mode, ds_config, tmp_path, tiny_dataset,
                                                        random_generator, capsys):
    off = train_records(tmp_path / "off", tiny_dataset, random_generator, mode, "off", ds_config)
    assert "kernels: torch references (kernels=off)" in capsys.readouterr().out
    on = train_records(tmp_path / "on", tiny_dataset, random_generator, mode, "on", ds_config)
    assert "kernels: fused Triton sampler and RTD loss" in capsys.readouterr().out

    assert [r["step"] for r in on] == [r["step"] for r in off] == [1, 2, 3, 4]
    loss = torch.tensor([[r["loss"] for r in on], [r["loss"] for r in off]])
    torch.testing.assert_close(loss[0], loss[1], **TRAIN_TOL)
    assert loss[1, -1] != loss[1, 0]  # the weights did change
    for r_on, r_off in zip(on, off):
        # the same replaced tokens (sampling), hence the same RTD classes
        for name in ("replace_rate", "rtd_replaced_share", "mlm_accuracy"):
            assert r_on[name] == pytest.approx(r_off[name], rel=1e-9), name
        for name in ("rtd_loss", "gen_entropy", "mlm_loss"):
            if name in r_off:
                assert r_on[name] == pytest.approx(r_off[name], rel=1e-5, abs=1e-6), name


# --------------------------------------------------------------------------------------------
# resolving the switch


def test_off_and_auto_on_cpu_pick_the_references():
    logs: list[str] = []
    assert resolve_kernels("off", "cpu", log=logs.append) is False
    assert resolve_kernels("auto", "cpu", log=logs.append) is False
    assert logs[0] == "kernels: torch references (kernels=off)"
    assert "on CUDA only" in logs[1]


@pytest.mark.skipif(interpreting(), reason="checks the CPU without TRITON_INTERPRET")
def test_on_without_a_gpu_or_the_interpreter_is_a_user_error(monkeypatch):
    with pytest.raises(UserError, match="kernels=on needs a CUDA device.*TRITON_INTERPRET=1"):
        resolve_kernels("on", "cpu")


def test_on_without_triton_is_a_user_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # so that CPU would qualify
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` raises ImportError
    with pytest.raises(UserError, match="kernels=on: Triton does not import"):
        resolve_kernels("on", "cpu")
    logs: list[str] = []
    assert resolve_kernels("auto", "cuda", log=logs.append) is False
    assert "Triton does not import" in logs[0]


@pytest.mark.skipif(interpreting() or torch.cuda.is_available(),
                    reason="needs triton imported without the interpreter, and no GPU")
def test_interpreter_flag_set_after_triton_was_imported_is_a_user_error(monkeypatch):
    # the flag counts only at triton's first import, which this process has had (importorskip
    # above): the start-up check catches kernels that would fail at the first step
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(UserError, match="kernels=on: the kernels failed a start-up check"):
        resolve_kernels("on", "cpu")


def test_frozen_generator_without_a_masked_only_head_keeps_the_eager_sampler(tmp_path):
    from transformers import AlbertConfig, AlbertForMaskedLM

    ElectraForMaskedLM(ElectraConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64)).save_pretrained(tmp_path / "electra")
    AlbertForMaskedLM(AlbertConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32,
                                   num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64)).save_pretrained(tmp_path / "albert")
    logs: list[str] = []
    load = dict(vocab_size=VOCAB, special_ids=tiny.SPECIAL, fused=True, logger=logs.append)
    assert frozen_generator.FrozenGenerator.load(str(tmp_path / "electra"), **load).fused
    assert not frozen_generator.FrozenGenerator.load(str(tmp_path / "albert"), **load).fused
    assert "AlbertForMaskedLM has no masked-only head path" in logs[-1]
