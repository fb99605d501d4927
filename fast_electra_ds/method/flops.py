"""Analytic FLOPs of one training step, as this implementation runs it: the learning curves' FLOPs
axis (modes.Mode.step_flops). The benchmarks (benchmarks/suite/cost_model.py) add the paper's
accounting, parameter counts and memory on top of these shapes and counts.

Everything is per *sequence* (one row of a micro-batch); a step costs that times the global batch.

FLOPs: 2 per multiply-add of every matrix product (linear layers, and the attention products
Q K^T and softmax(.) V, 4 L^2 H per layer in all), nothing for element-wise work (softmax, GELU,
LayerNorm, dropout, losses, sampling), the same things torch's FlopCounterMode counts. A trained
model costs 3x its forward (backward = 2x: gradients of the inputs and of the weights); the frozen
generator of Fast-ELECTRA costs 1x.

What runs (models.py, mlm_head.masked_logits): an ELECTRA encoder (embedding lookups are free; a
projection E -> H when embedding_size != hidden_size), the discriminator head (dense H -> H, then
H -> 1) at every position, and the generator's head (dense H -> E, then the vocabulary projection
E -> V) only at the K masked positions, K = masking.num_predictions(L, mask_prob): in joint mode
as well as for the frozen generator.
"""

from __future__ import annotations

from dataclasses import dataclass

from fast_electra_ds.config import GeneratorConfig, ModelConfig

# The trained-vs-frozen multipliers: forward + backward (2x forward), or forward alone.
TRAINED, FROZEN = 3, 1


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


def encoder_flops(enc: Encoder, seq_len: int) -> int:
    """Embedding projection (if any) and the transformer layers, all seq_len positions."""
    L, h, f = seq_len, enc.hidden_size, enc.intermediate_size
    projection = 2 * L * enc.embedding_size * h if enc.embedding_size != h else 0
    # Q, K, V, output (4 h x h) and the FFN (h x F, F x h); Q K^T and probs @ V (2 L^2 h)
    per_layer = 2 * L * (4 * h * h + 2 * h * f) + 4 * L * L * h
    return projection + enc.num_layers * per_layer


def discriminator_flops(enc: Encoder, seq_len: int) -> int:
    """ElectraForPreTraining, forward: encoder + head (dense h -> h, then h -> 1) at every
    position."""
    h = enc.hidden_size
    return encoder_flops(enc, seq_len) + 2 * seq_len * (h * h + h)


def generator_flops(enc: Encoder, seq_len: int, head_positions: int, vocab_size: int) -> int:
    """ElectraForMaskedLM, forward, with its head (dense h -> E, projection E -> V) at
    `head_positions` of the sequence: K for masked_logits, seq_len for a model that computes
    every position."""
    e = enc.embedding_size
    head = 2 * head_positions * (enc.hidden_size * e + e * vocab_size)
    return encoder_flops(enc, seq_len) + head
