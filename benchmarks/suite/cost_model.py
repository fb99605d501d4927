"""Analytic cost of one training step: FLOPs and memory of the main and auxiliary models, for
joint ELECTRA, Fast-ELECTRA and the benchmark's other modes. The report prints it beside what
measure.py measures.

Everything is per *sequence* (one row of a micro-batch); a step costs that times the global batch.

A step is described by how its auxiliary model (the generator) takes part, `Auxiliary`: trained
inside the engine with the discriminator (joint ELECTRA, the peer), frozen outside it
(Fast-ELECTRA) or absent (disc-only); and where its vocabulary head runs, at the K masked
positions (masked_logits) or at all L (the peer).

FLOPs follow the library's convention (fast_electra_ds/method/flops.py: 2 per multiply-add of
every matrix product, element-wise work free; trained = 3x forward, frozen = 1x). Two accountings:

  ours    the library's counts, what this implementation runs (flops.py): an ELECTRA encoder
          (embedding lookups are free; a projection E -> H when embedding_size != hidden_size),
          the discriminator head (dense H -> H, then H -> 1) at every position, and the
          generator's head (dense H -> E, then the vocabulary projection E -> V) only at the K
          masked positions, K = masking.num_predictions(L, mask_prob) (77 of 512 at ELECTRA's
          15%, MASK_PROB): in joint mode as well as for the frozen generator.
  paper   the Fast-ELECTRA paper's GFLOP table, reproduced to 0.02% by
          per token: n_layers * (2 (4 H^2 + 2 H F) + 4 L H) + 2 V H, over all L = 512 positions,
          with V = 128,000 (PAPER_VOCAB) in *both* models: a vocabulary-sized projection at every
          position (for the auxiliary model, its LM head over all 512 positions, not 15% of them;
          for the main model, the word embeddings counted like a matmul, i.e. 2 x parameters with
          the embeddings included). No head, no embedding projection. The table's auxiliary model
          is the Fast-ELECTRA paper's: 4 layers (base) / 6 layers (large) at the main model's
          width, the same for "Original" (trained jointly, 3x) and Fast-ELECTRA (frozen, 1x).
          The recipes' generator.* (ELECTRA's narrow joint generators) do not reproduce it; the
          report shows both against the paper.

Memory (bytes, per micro-batch of `batch` sequences):
  training state  16 bytes per trained parameter in either precision: fp32 = weights 4 + grads 4
                  + Adam m, v 8; mixed (bf16/fp16) = weights 2 + grads 2 + fp32 master 4 + m, v 8
                  (the ZeRO paper's count, no ZeRO partitioning: one rank holds everything).
  activations     kept for backward, per layer (Korthikanti et al. 2022, generalized to e bytes
                  per element and FFN width F; dropout masks 1 byte):
                      (8e + 2) s b h + 2e s b F + (2e + 1) a s^2 b
                  (e = 2, F = 4h gives their 34 s b h + 5 a s^2 b). The s^2 term is eager / math
                  attention (what SDPA runs on CPU in training, with dropout); flash attention
                  replaces it by O(a s b). Plus embeddings (e + 1) s b E, the discriminator head
                  3e s b h, the generator head 3e b K h' and its logits b K V (e + 4 + 4 with a
                  fp32 copy for the loss when e < 4, and log_softmax saved by cross-entropy).
  frozen model    its weights only (fp16 on GPU, 2 bytes; fp32 on CPU), nothing kept between
                  steps; while it runs, a transient peak (`inference_peak_bytes`). It runs
                  before the main model's forward and frees it before, so it raises the step's
                  peak only by what exceeds the main model's activations (`peak_bytes`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fast_electra_ds.data.masking import num_predictions
from fast_electra_ds.method.flops import (FROZEN, TRAINED, Encoder, discriminator_flops,
                                          generator_flops)

# ELECTRA's masking rate, at which the paper's shapes are counted
MASK_PROB = 0.15
PAPER_SEQ_LEN = 512
# The vocabulary that reproduces the paper's table (the report shows what each of its cells
# implies)
PAPER_VOCAB = 128_000
STATE_BYTES_PER_PARAM = 16
_TYPE_VOCAB = 2  # ElectraConfig's default token types

# The paper's tables (Dong et al. 2023, slides "reduces the peak memory", "avoids wasted
# computation"): per model size, GFLOPs and GB of the main model, the auxiliary model trained
# jointly ("Original") and frozen ("Fast-ELECTRA").
PAPER_GFLOPS = {
    "base": {"main": 591.9, "aux_joint": 398.6, "aux_fast": 132.9,
             "total_joint": 990.5, "total_fast": 724.8},
    "large": {"main": 1407.7, "aux_joint": 653.9, "aux_fast": 218.0,
              "total_joint": 2061.6, "total_fast": 1625.6},
}
PAPER_MEMORY_GB = {
    "base": {"main": 23.0, "aux_joint": 7.0, "aux_fast": 0.25,
             "total_joint": 30.0, "total_fast": 23.3},
    "large": {"main": 60.2, "aux_joint": 14.4, "aux_fast": 0.42,
              "total_joint": 74.6, "total_fast": 60.6},
}

# The Fast-ELECTRA paper's shapes: main = ELECTRA-Base / -Large; auxiliary = a third / a quarter
# of the depth at the main model's width.
PAPER_SHAPES = {
    "base": (Encoder(12, 768, 12, 3072, 768), Encoder(4, 768, 12, 3072, 768)),
    "large": (Encoder(24, 1024, 16, 4096, 1024), Encoder(6, 1024, 16, 4096, 1024)),
}


class Role(enum.Enum):
    """How the generator takes part in a step; the value is its FLOP multiplier."""

    TRAINED = TRAINED  # inside the engine: forward + backward, optimizer state, activations
    FROZEN = FROZEN  # outside the engine: forward alone, weights and a transient
    NONE = 0  # no generator: uniform random replacements


@dataclass(frozen=True)
class Auxiliary:
    """The auxiliary model's part in a step (module doc)."""

    role: Role
    head_everywhere: bool = False  # vocabulary head at all L positions, not only the K masked

    def head_positions(self, seq_len: int, mask_prob: float) -> int:
        return seq_len if self.head_everywhere else num_predictions(seq_len, mask_prob)


JOINT = Auxiliary(Role.TRAINED)  # ELECTRA: ElectraObjective, masked_logits
FAST = Auxiliary(Role.FROZEN)  # Fast-ELECTRA: FrozenGenerator.corrupt, masked_logits
NO_GENERATOR = Auxiliary(Role.NONE)


# --------------------------------------------------------------------------------------------
# FLOPs, one sequence


def paper_forward_flops(enc: Encoder, seq_len: int = PAPER_SEQ_LEN,
                        vocab_size: int = PAPER_VOCAB) -> int:
    """The paper's accounting (module doc): layers + attention + a 2 V h term, every position."""
    h, f = enc.hidden_size, enc.intermediate_size
    layers = enc.num_layers * (2 * (4 * h * h + 2 * h * f) + 4 * seq_len * h)
    per_token = layers + 2 * vocab_size * h
    return seq_len * per_token


def paper_implied_vocab(forward_gflops: float, enc: Encoder, seq_len: int = PAPER_SEQ_LEN) -> float:
    """V such that paper_forward_flops(enc, seq_len, V) equals a forward cost of the table."""
    h, f = enc.hidden_size, enc.intermediate_size
    layers = enc.num_layers * (2 * (4 * h * h + 2 * h * f) + 4 * seq_len * h)
    return (forward_gflops * 1e9 / seq_len - layers) / (2 * h)


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one sequence in one training step (forward, plus backward where trained)."""

    main: int
    aux: int

    @property
    def total(self) -> int:
        return self.main + self.aux


def step_flops(disc: Encoder, gen: Encoder, aux: Auxiliary, *, seq_len: int, vocab_size: int,
               mask_prob: float = MASK_PROB) -> StepFlops:
    """Our accounting of one sequence's training step with auxiliary part `aux`."""
    positions = aux.head_positions(seq_len, mask_prob)
    return StepFlops(main=TRAINED * discriminator_flops(disc, seq_len),
                     aux=aux.role.value * generator_flops(gen, seq_len, positions, vocab_size))


def paper_step_flops(main: Encoder, gen: Encoder, aux: Auxiliary, *,
                     seq_len: int = PAPER_SEQ_LEN, vocab_size: int = PAPER_VOCAB) -> StepFlops:
    """The paper's accounting of one sequence's training step (its head is at every position
    whatever `aux.head_everywhere` says)."""
    return StepFlops(main=TRAINED * paper_forward_flops(main, seq_len, vocab_size),
                     aux=aux.role.value * paper_forward_flops(gen, seq_len, vocab_size))


# --------------------------------------------------------------------------------------------
# Parameters and memory


def _layer_params(h: int, f: int) -> int:
    # Q, K, V, output with biases; two LayerNorms; FFN in and out with biases
    return 4 * (h * h + h) + 2 * 2 * h + (h * f + f) + (f * h + h)


def embedding_params(embedding_size: int, vocab_size: int, max_positions: int) -> int:
    """Word, position and token-type tables plus their LayerNorm (shared in mode=electra)."""
    return (vocab_size + max_positions + _TYPE_VOCAB) * embedding_size + 2 * embedding_size


def discriminator_params(enc: Encoder, *, vocab_size: int, max_positions: int) -> int:
    """Parameters of ElectraForPreTraining (embeddings included)."""
    h, e = enc.hidden_size, enc.embedding_size
    projection = e * h + h if e != h else 0
    head = (h * h + h) + (h + 1)
    return (embedding_params(e, vocab_size, max_positions) + projection
            + enc.num_layers * _layer_params(h, enc.intermediate_size) + head)


def generator_params(enc: Encoder, *, vocab_size: int, max_positions: int,
                     with_embeddings: bool = True) -> int:
    """Parameters of ElectraForMaskedLM (output projection tied to the word embeddings; its bias
    counts). with_embeddings=False: what mode=electra adds on top of the shared embeddings."""
    h, e = enc.hidden_size, enc.embedding_size
    projection = e * h + h if e != h else 0
    head = (h * e + e) + 2 * e + vocab_size  # dense, LayerNorm, output bias
    embeddings = embedding_params(e, vocab_size, max_positions) if with_embeddings else 0
    return embeddings + projection + enc.num_layers * _layer_params(h, enc.intermediate_size) + head


def _layer_activation_bytes(enc: Encoder, batch: int, seq_len: int, e: int) -> int:
    s, b, h, a, f = seq_len, batch, enc.hidden_size, enc.num_heads, enc.intermediate_size
    return (8 * e + 2) * s * b * h + 2 * e * s * b * f + (2 * e + 1) * a * s * s * b


def _logits_bytes(batch: int, positions: int, vocab_size: int, e: int) -> int:
    fp32_copy = 4 if e < 4 else 0  # objectives.mlm_loss upcasts; a no-op in fp32
    return batch * positions * vocab_size * (e + fp32_copy + 4)


def discriminator_activation_bytes(enc: Encoder, *, batch: int, seq_len: int, e: int) -> int:
    """Activations the discriminator keeps for its backward pass (module doc)."""
    s, b, h = seq_len, batch, enc.hidden_size
    return ((e + 1) * s * b * enc.embedding_size
            + enc.num_layers * _layer_activation_bytes(enc, b, s, e) + 3 * e * s * b * h)


def generator_activation_bytes(enc: Encoder, *, batch: int, seq_len: int, head_positions: int,
                               vocab_size: int, e: int) -> int:
    """Activations a jointly trained generator keeps for its backward pass (module doc)."""
    s, b, h = seq_len, batch, enc.hidden_size
    head = 3 * e * b * head_positions * h + _logits_bytes(b, head_positions, vocab_size, e)
    return ((e + 1) * s * b * enc.embedding_size
            + enc.num_layers * _layer_activation_bytes(enc, b, s, e) + head)


# sampling._SAMPLE_CHUNK_ELEMENTS: the eager sampler works on at most this many logits at once
# on a GPU (on a CPU on fewer, so there this is an upper bound)
_SAMPLE_CHUNK_ELEMENTS = 1 << 25


def inference_peak_bytes(enc: Encoder, *, batch: int, seq_len: int, head_positions: int,
                         vocab_size: int, e: int) -> int:
    """Transient peak of a frozen generator's forward + sampling (no_grad: one layer's tensors
    live at a time): the residual stream, Q/K/V/context (4 [b, s, h]) and the FFN's [b, s, F],
    the attention probabilities [b, a, s, s], then the [b, K, V] logits plus the eager sampler's
    scratch on chunks of at most 2^25 elements: logits / T, noise and softmax in fp32 and the
    counter-based hash's int32 temporaries (counter_rng; about three alive at once)."""
    s, b, h = seq_len, batch, enc.hidden_size
    layer = e * s * b * (5 * h + enc.intermediate_size) + e * b * enc.num_heads * s * s
    logits = b * head_positions * vocab_size
    sampler = (3 * 4 + 3 * 4) * min(logits, _SAMPLE_CHUNK_ELEMENTS)
    return max(layer, e * logits + sampler)


@dataclass(frozen=True)
class ModelMemory:
    """Bytes one model needs during a step (per micro-batch)."""

    weights: int
    grads: int
    optimizer: int  # Adam m, v (and fp32 master weights under mixed precision)
    activations: int  # kept for backward; 0 for a frozen model
    inference_peak: int = 0  # frozen model: transient while it runs (not held across the step)

    @property
    def total(self) -> int:
        """What the paper's table counts: held memory (a frozen model: its weights)."""
        return self.weights + self.grads + self.optimizer + self.activations


def trained_memory(params: int, activations: int, precision: str) -> ModelMemory:
    """precision: fp32, or bf16 / fp16 (mixed, with fp32 master weights)."""
    if precision == "fp32":
        weights, grads, optimizer = 4 * params, 4 * params, 8 * params
    else:
        weights, grads, optimizer = 2 * params, 2 * params, 12 * params
    assert weights + grads + optimizer == STATE_BYTES_PER_PARAM * params
    return ModelMemory(weights, grads, optimizer, activations)


def step_memory(disc: Encoder, gen: Encoder, aux: Auxiliary, *, batch: int, seq_len: int,
                vocab_size: int, max_positions: int, precision: str,
                frozen_bytes_per_param: int, mask_prob: float = MASK_PROB
                ) -> tuple[ModelMemory, ModelMemory | None]:
    """(main, auxiliary) memory of a step; auxiliary None without a generator.

    precision: of the trained models (fp32, bf16, fp16); frozen_bytes_per_param: of the frozen
    generator's weights (2 for fp16 on GPU, 4 for fp32 on CPU). A trained generator shares the
    discriminator's embeddings, so its own parameters exclude them.
    """
    e = 4 if precision == "fp32" else 2
    k = aux.head_positions(seq_len, mask_prob)
    main = trained_memory(
        discriminator_params(disc, vocab_size=vocab_size, max_positions=max_positions),
        discriminator_activation_bytes(disc, batch=batch, seq_len=seq_len, e=e), precision)
    if aux.role is Role.NONE:
        return main, None
    if aux.role is Role.TRAINED:
        return main, trained_memory(
            generator_params(gen, vocab_size=vocab_size, max_positions=max_positions,
                             with_embeddings=False),
            generator_activation_bytes(gen, batch=batch, seq_len=seq_len, head_positions=k,
                                       vocab_size=vocab_size, e=e), precision)
    params = generator_params(gen, vocab_size=vocab_size, max_positions=max_positions)
    peak = inference_peak_bytes(gen, batch=batch, seq_len=seq_len, head_positions=k,
                                vocab_size=vocab_size, e=frozen_bytes_per_param)
    return main, ModelMemory(frozen_bytes_per_param * params, 0, 0, 0, inference_peak=peak)


def peak_bytes(main: ModelMemory, aux: ModelMemory | None) -> int:
    """The step's peak: everything held, plus a frozen model's transient where it exceeds the
    main model's activations (the two are never alive at the same time)."""
    if aux is None:
        return main.total
    return main.total + aux.total + max(0, aux.inference_peak - main.activations)
