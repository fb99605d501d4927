"""How replacements are drawn from a masked LM, and the discriminator's input built from them.

  sample_replacements  exact sampling from softmax(logits / T): a two-level Gumbel-max
                       (fast_electra_kernels.sampler.gumbel_max) with counter-based noise
                       (counter_rng), so a draw depends only on (seed, sample id, slot)
  corrupt_from_logits  ELECTRA's corruption: every selected position of the ORIGINAL sequence gets
                       a sample; the RTD label is 1 where the sample differs from the original
  corrupt              both for one MaskedBatch and any masked LM (frozen or trained); with
                       fused=True (config kernels) the fused Triton sampler replaces the logits
                       and the sampling (kernel_switch.py): same draws, no [B, K, V] tensor

The jointly trained generator of mode=electra uses the same functions (objectives.py). Metric
keys returned here are sums and counts; training.metrics turns them into rates.
"""

from __future__ import annotations

import functools

import torch
from fast_electra_kernels import counter_rng
from fast_electra_kernels.sampler import gumbel_max
from torch import nn

from fast_electra_ds.data.masking import MaskedBatch
from fast_electra_ds.method import kernel_switch
from fast_electra_ds.method.mlm_head import masked_hidden, masked_logits, output_projection

# Rows of [*, V] fp32 scratch handled at once when sampling: bounds the temporary memory of the
# eager sampler (z, its exponentials, their products) to a few hundred MB whatever B * K is. On a
# CPU, chunks of a few MB: small enough to stay in cache between the passes, large enough that
# the per-chunk work on the groups is not the cost (1 << 20: 15 ms at 160 x 30522, 1 << 18: 19).
_SAMPLE_CHUNK_ELEMENTS = 1 << 25
_SAMPLE_CHUNK_ELEMENTS_CPU = 1 << 20


@torch.no_grad()
def sample_replacements(logits: torch.Tensor, *, temperature: float, seed: int,
                        sample_ids: torch.Tensor, weights: torch.Tensor | None = None,
                        compiled: bool = False) -> tuple[torch.Tensor, dict]:
    """Draw one token per slot from softmax(logits / T), reproducibly.

    logits: [B, K, V] (any float dtype; the arithmetic is fp32). sample_ids: [B] global sample
    index of each sequence; slot k of sample s uses the noise row s * K + k, so a draw does not
    depend on batch composition, rank layout or device. weights: [B, K], 0 on unused slots
    (default: all used); only used slots count in the stats.

    Returns sampled [B, K] int64 and stats {"gen_entropy_sum": sum over used slots of the
    entropy (nats) of softmax(logits / T)}, a float64 scalar tensor.

    compiled: run `_draw` through torch.compile (config train.compile). Eager, each element-wise
    step is a pass over [rows, V]; compiled, the passes over a group become one loop. The same
    integer hash and the same float operations: the same tokens (tests/test_compile.py); the
    entropy agrees to float32 rounding.
    """
    assert temperature > 0, temperature
    b, k, v = logits.shape
    rows = noise_rows(sample_ids.to(logits.device), k)  # [B*K]
    flat = logits.reshape(b * k, v)  # [N, V]
    sampled = torch.empty(b * k, dtype=torch.int64, device=logits.device)  # [N]
    entropy = torch.empty(b * k, dtype=torch.float32, device=logits.device)  # [N]
    # eager on CPU: chunks small enough that the in-place noise passes stay in cache (compiled,
    # there are no [n, V] temporaries to keep in cache)
    small = not (logits.is_cuda or compiled)
    chunk = max(1, (_SAMPLE_CHUNK_ELEMENTS_CPU if small else _SAMPLE_CHUNK_ELEMENTS) // v)
    draw = _compiled_draw() if compiled else _draw
    keys = counter_rng.row_keys(seed, rows)  # [N]
    for start in range(0, b * k, chunk):
        end = min(start + chunk, b * k)
        z = flat[start:end].float() / temperature  # [n, V]
        sampled[start:end], entropy[start:end] = draw(z, keys[start:end])
    sampled = sampled.view(b, k)
    used = torch.ones(b, k, device=logits.device) if weights is None else (weights > 0).float()
    stats = {"gen_entropy_sum": (entropy.view(b, k) * used).sum().double()}
    return sampled, stats


def _draw(z: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws and entropies of softmax(z) for z [n, V] fp32 and row keys [n]: the two-level
    Gumbel-max of fast_electra_kernels.sampler.gumbel_max, an exact draw from softmax(z)."""
    tokens, lse, expected = gumbel_max(z, keys)
    return tokens, lse - expected


@functools.cache
def _compiled_draw():
    # dynamic: the last chunk, and batches of another size, reuse the one compiled loop
    return torch.compile(_draw, dynamic=True)


def replace_at_positions(input_ids: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor,
                         sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's input and targets.

    input_ids [B, L] are the ORIGINAL tokens (not the generator's masked input): every used slot
    (weights > 0) of `positions` [B, K] takes its sample [B, K], whether the masker turned it into
    [MASK] or kept it (ELECTRA). Returns corrupted_ids [B, L] int64 and rtd_labels [B, L] float32,
    1.0 where the token now differs from the original (a sample equal to the original is 0).
    """
    b, length = input_ids.shape
    used = weights > 0  # [B, K]
    # Unused slots write into a scratch column L that is then dropped: no host sync (nonzero),
    # and an unused slot's dummy position can never overwrite a used one.
    index = torch.where(used, positions, torch.full_like(positions, length))  # [B, K]
    extended = torch.cat([input_ids, input_ids.new_zeros(b, 1)], dim=1)  # [B, L + 1]
    extended.scatter_(1, index, sampled.to(input_ids.dtype))
    corrupted = extended[:, :length]  # [B, L]
    rtd_labels = (corrupted != input_ids).float()  # [B, L]
    return corrupted, rtd_labels


@torch.no_grad()
def mlm_counts(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> dict:
    """{"num_slots", "mlm_correct"}: used slots, and those where argmax(logits) is the label."""
    used = weights > 0  # [B, K]
    return {"num_slots": used.sum().double(),
            "mlm_correct": ((logits.argmax(-1) == labels) & used).sum().double()}


@torch.no_grad()
def corrupt_from_logits(logits: torch.Tensor, *, input_ids: torch.Tensor,
                        positions: torch.Tensor, weights: torch.Tensor, sample_ids: torch.Tensor,
                        temperature: float, seed: int, compiled: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Generator logits [B, K, V] -> (corrupted_ids [B, L], rtd_labels [B, L], metrics).

    No gradient flows through sampling (ELECTRA). metrics: gen_entropy_sum (entropy at T over used
    slots) and gen_num_replaced (used slots whose sample differs from the original; since used
    positions are distinct, this is rtd_labels.sum()).
    """
    sampled, stats = sample_replacements(logits, temperature=temperature, seed=seed,
                                         sample_ids=sample_ids, weights=weights,
                                         compiled=compiled)
    corrupted, rtd_labels = replace_at_positions(input_ids, positions, weights, sampled)
    metrics = {**stats, "gen_num_replaced": rtd_labels.sum().double()}
    return corrupted, rtd_labels, metrics


def noise_rows(sample_ids: torch.Tensor, num_slots: int) -> torch.Tensor:
    """[B * K] int64 RNG rows: slot k of sample s draws with row s * K + k (see
    sample_replacements), whichever sampler runs."""
    slots = torch.arange(num_slots, dtype=torch.int64, device=sample_ids.device)
    return (sample_ids.to(torch.int64)[:, None] * num_slots + slots).reshape(-1)


@torch.no_grad()  # not inference_mode: the outputs feed the discriminator's backward pass
def corrupt(model: nn.Module, batch: MaskedBatch, *, temperature: float, seed: int,
            fused: bool = False, compiled: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Run a masked LM on `batch` and build the discriminator's input from its samples.

    Returns corrupted_ids [B, L] int64, rtd_labels [B, L] float32 and metrics (float64 scalar
    tensors, sums and counts): num_slots, mlm_correct (argmax at a used slot is the original
    token), gen_entropy_sum (at T), gen_num_replaced. `model` and `batch` on the same device.

    fused: sample with the fused Triton kernel (kernel_switch.sample) instead of building
    [B, K, V] logits; needs an architecture with a masked-only head (`mlm_head`) and parameters
    that are not ZeRO-3 partitioned (`output_projection`), as a frozen generator's are.
    compiled: the eager sampler through torch.compile (sample_replacements).
    """
    if fused:
        return _corrupt_fused(model, batch, temperature=temperature, seed=seed)
    logits = masked_logits(model, batch.masked_ids, batch.attention_mask, batch.positions,
                           batch.token_type_ids)  # [B, K, V]
    corrupted, rtd_labels, metrics = corrupt_from_logits(
        logits, input_ids=batch.input_ids, positions=batch.positions, weights=batch.weights,
        sample_ids=batch.sample_ids, temperature=temperature, seed=seed, compiled=compiled)
    return corrupted, rtd_labels, {**mlm_counts(logits, batch.labels, batch.weights), **metrics}


def _corrupt_fused(model: nn.Module, batch: MaskedBatch, *, temperature: float,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """`corrupt` through the fused sampler: the same outputs from the decoder's input [B, K, E].

    Every slot is sampled, used or not, as in the eager path: static shapes, no host sync to
    pick the used ones (with packed data almost all slots are used); unused slots are dropped by
    replace_at_positions and left out of the metrics.
    """
    assert temperature > 0, temperature
    h = masked_hidden(model, batch.masked_ids, batch.attention_mask, batch.positions,
                      batch.token_type_ids)  # [B, K, E]
    b, k, e = h.shape
    weight, bias = output_projection(model)  # [V, E], [V]
    out = kernel_switch.sample(h.reshape(b * k, e), weight, bias, temperature=temperature,
                               seed=seed, rows=noise_rows(batch.sample_ids.to(h.device), k))
    # (each output [B * K])
    sampled = out.tokens.view(b, k)
    corrupted, rtd_labels = replace_at_positions(batch.input_ids, batch.positions, batch.weights,
                                                 sampled)
    used = batch.weights > 0  # [B, K]
    metrics = {
        "num_slots": used.sum().double(),
        "mlm_correct": ((out.argmax.view(b, k) == batch.labels) & used).sum().double(),
        "gen_entropy_sum": (out.entropy.view(b, k) * used).sum().double(),
        "gen_num_replaced": rtd_labels.sum().double(),
    }
    return corrupted, rtd_labels, metrics


