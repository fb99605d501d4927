"""Analytic cost of one training step: FLOPs and memory of the main and auxiliary models, for
joint ELECTRA and Fast-ELECTRA. `fast-electra bench` (bench.py) prints it beside measurements.

Everything is per *sequence* (one row of a micro-batch); a step costs that times the global batch.

FLOPs: 2 per multiply-add of every matrix product (linear layers, and the attention products
Q K^T and softmax(.) V, 4 L^2 H per layer in all), nothing for element-wise work (softmax, GELU,
LayerNorm, dropout, losses, sampling), the same things torch's FlopCounterMode counts. A trained
model costs 3x its forward (backward = 2x: gradients of the inputs and of the weights); the frozen
generator of Fast-ELECTRA costs 1x. Two accountings:

  ours    what this implementation runs (models.py, generator.masked_logits): an ELECTRA encoder
          (embedding lookups are free; a projection E -> H when embedding_size != hidden_size),
          the discriminator head (dense H -> H, then H -> 1) at every position, and the
          generator's head (dense H -> E, then the vocabulary projection E -> V) only at the K
          masked positions, K = masking.num_predictions(L, 0.15) (77 of 512): in joint mode as
          well as for the frozen generator.
  paper   the Fast-ELECTRA paper's GFLOP table, reproduced to 0.02% by
          per token: n_layers * (2 (4 H^2 + 2 H F) + 4 L H) + 2 V H, over all L = 512 positions,
          with V = 128,000 (PAPER_VOCAB) in *both* models: a vocabulary-sized projection at every
          position (for the auxiliary model, its LM head over all 512 positions, not 15% of them;
          for the main model, the word embeddings counted like a matmul, i.e. 2 x parameters with
          the embeddings included). No head, no embedding projection. The table's auxiliary model
          is the Fast-ELECTRA paper's: 4 layers (base) / 6 layers (large) at the main model's
          width, the same for "Original" (trained jointly, 3x) and Fast-ELECTRA (frozen, 1x).
          The recipes' generator.* (ELECTRA's narrow joint generators) do not reproduce it;
          bench.py shows both against the paper.

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

from dataclasses import dataclass

from fast_electra_ds.config import GeneratorConfig, ModelConfig, RunConfig
from fast_electra_ds.data.masking import num_predictions

MASK_PROB = 0.15
PAPER_SEQ_LEN = 512
# The vocabulary that reproduces the paper's table (bench.py shows what each of its cells implies)
PAPER_VOCAB = 128_000
# The trained-vs-frozen multipliers: forward + backward (2x forward), or forward alone.
TRAINED, FROZEN = 3, 1
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


@dataclass(frozen=True)
class Encoder:
    """The shape of an ELECTRA encoder, as models.py builds it."""

    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    embedding_size: int

    @classmethod
    def discriminator(cls, model: ModelConfig) -> "Encoder":
        return cls(model.num_layers, model.hidden_size, model.num_heads, model.intermediate_size,
                   model.embedding_size)

    @classmethod
    def generator(cls, gen: GeneratorConfig, embedding_size: int) -> "Encoder":
        """The generator of mode=electra/mlm: its own layers on the discriminator's embeddings."""
        return cls(gen.num_layers, gen.hidden_size, gen.num_heads, gen.intermediate_size,
                   embedding_size)

    @classmethod
    def from_hf_config(cls, config) -> "Encoder":
        """The shape of a HF encoder config (BERT, RoBERTa, ELECTRA, ...; DistilBERT's names
        are mapped by its config class, its FFN width is `hidden_dim`)."""
        return cls(config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                   getattr(config, "intermediate_size", None) or config.hidden_dim,
                   getattr(config, "embedding_size", config.hidden_size))

    def describe(self) -> str:
        return (f"{self.num_layers} layers x {self.hidden_size} (FFN {self.intermediate_size}, "
                f"{self.num_heads} heads, embeddings {self.embedding_size})")


# The Fast-ELECTRA paper's shapes: main = ELECTRA-Base / -Large; auxiliary = a third / a quarter
# of the depth at the main model's width.
PAPER_SHAPES = {
    "base": (Encoder(12, 768, 12, 3072, 768), Encoder(4, 768, 12, 3072, 768)),
    "large": (Encoder(24, 1024, 16, 4096, 1024), Encoder(6, 1024, 16, 4096, 1024)),
}


# --------------------------------------------------------------------------------------------
# FLOPs, forward, one sequence


def encoder_flops(enc: Encoder, seq_len: int) -> int:
    """Embedding projection (if any) and the transformer layers, all seq_len positions."""
    L, h, f = seq_len, enc.hidden_size, enc.intermediate_size
    projection = 2 * L * enc.embedding_size * h if enc.embedding_size != h else 0
    # Q, K, V, output (4 h x h) and the FFN (h x F, F x h); Q K^T and probs @ V (2 L^2 h)
    per_layer = 2 * L * (4 * h * h + 2 * h * f) + 4 * L * L * h
    return projection + enc.num_layers * per_layer


def discriminator_flops(enc: Encoder, seq_len: int) -> int:
    """ElectraForPreTraining: encoder + head (dense h -> h, then h -> 1) at every position."""
    h = enc.hidden_size
    return encoder_flops(enc, seq_len) + 2 * seq_len * (h * h + h)


def generator_flops(enc: Encoder, seq_len: int, head_positions: int, vocab_size: int) -> int:
    """ElectraForMaskedLM with its head (dense h -> E, projection E -> V) at `head_positions` of
    the sequence: K for masked_logits, seq_len for a model that computes every position."""
    e = enc.embedding_size
    head = 2 * head_positions * (enc.hidden_size * e + e * vocab_size)
    return encoder_flops(enc, seq_len) + head


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


# mode -> (auxiliary multiplier, where the generator's head runs: "masked" K or "all" L)
MODE_AUX = {
    "electra": (TRAINED, "masked"),  # ours: ElectraObjective, masked_logits
    "fast-electra": (FROZEN, "masked"),  # ours: FrozenGenerator.corrupt, masked_logits
    "disc-only": (0, "masked"),  # uniform random replacements, no generator
    "peer": (TRAINED, "all"),  # electra-pytorch: generator logits at every position
}


def step_flops(mode: str, disc: Encoder, gen: Encoder, *, seq_len: int, vocab_size: int,
               mask_prob: float = MASK_PROB) -> StepFlops:
    """Our accounting of one sequence's training step in `mode` (a key of MODE_AUX)."""
    multiplier, where = MODE_AUX[mode]
    positions = num_predictions(seq_len, mask_prob) if where == "masked" else seq_len
    aux = multiplier * generator_flops(gen, seq_len, positions, vocab_size) if multiplier else 0
    return StepFlops(main=TRAINED * discriminator_flops(disc, seq_len), aux=aux)


def run_step_flops(cfg: RunConfig, *, vocab_size: int, generator: Encoder) -> int:
    """Our accounting of one optimizer step of a run, over its global batch: what the learning
    curves put on their FLOPs axis. `generator` is the generator's shape (for mode=fast-electra
    the frozen model's, `Encoder.from_hf_config`)."""
    seq_len, mask_prob = cfg.data.seq_len, cfg.masking.mask_prob
    if cfg.mode == "mlm":  # the masked LM trained alone
        positions = num_predictions(seq_len, mask_prob)
        per_sequence = TRAINED * generator_flops(generator, seq_len, positions, vocab_size)
    else:
        per_sequence = step_flops(cfg.mode, Encoder.discriminator(cfg.model), generator,
                                  seq_len=seq_len, vocab_size=vocab_size,
                                  mask_prob=mask_prob).total
    return cfg.train.global_batch_size * per_sequence


def paper_step_flops(mode: str, main: Encoder, aux: Encoder, *, seq_len: int = PAPER_SEQ_LEN,
                     vocab_size: int = PAPER_VOCAB) -> StepFlops:
    """The paper's accounting of one sequence's training step, mode electra or fast-electra."""
    multiplier = TRAINED if mode == "electra" else FROZEN
    return StepFlops(main=TRAINED * paper_forward_flops(main, seq_len, vocab_size),
                     aux=multiplier * paper_forward_flops(aux, seq_len, vocab_size))


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


# generator._SAMPLE_CHUNK_ELEMENTS: the eager sampler works on at most this many logits at once
_SAMPLE_CHUNK_ELEMENTS = 1 << 25


def inference_peak_bytes(enc: Encoder, *, batch: int, seq_len: int, head_positions: int,
                         vocab_size: int, e: int) -> int:
    """Transient peak of a frozen generator's forward + sampling (no_grad: one layer's tensors
    live at a time): the residual stream, Q/K/V/context (4 [b, s, h]) and the FFN's [b, s, F],
    the attention probabilities [b, a, s, s], then the [b, K, V] logits plus the eager sampler's
    scratch on chunks of at most 2^25 elements: logits / T, noise and softmax in fp32 and the
    counter-based hash's int32 temporaries (rng.py; about three alive at once)."""
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


def step_memory(mode: str, disc: Encoder, gen: Encoder, *, batch: int, seq_len: int,
                vocab_size: int, max_positions: int, precision: str,
                frozen_bytes_per_param: int, mask_prob: float = MASK_PROB
                ) -> tuple[ModelMemory, ModelMemory | None]:
    """(main, auxiliary) memory of a step in `mode` (electra, fast-electra or disc-only).

    precision: of the trained models (fp32, bf16, fp16); frozen_bytes_per_param: of the frozen
    generator's weights (2 for fp16 on GPU, 4 for fp32 on CPU).
    """
    e = 4 if precision == "fp32" else 2
    k = num_predictions(seq_len, mask_prob)
    main = trained_memory(
        discriminator_params(disc, vocab_size=vocab_size, max_positions=max_positions),
        discriminator_activation_bytes(disc, batch=batch, seq_len=seq_len, e=e), precision)
    if mode == "disc-only":
        return main, None
    if mode == "electra":
        aux = trained_memory(
            generator_params(gen, vocab_size=vocab_size, max_positions=max_positions,
                             with_embeddings=False),
            generator_activation_bytes(gen, batch=batch, seq_len=seq_len, head_positions=k,
                                       vocab_size=vocab_size, e=e), precision)
        return main, aux
    assert mode == "fast-electra", mode
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
