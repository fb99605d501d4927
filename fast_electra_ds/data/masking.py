"""Which positions the generator fills in: ELECTRA-style dynamic masking with static shapes.

Per sequence, `num_predictions(seq_len, mask_prob)` = K slots are reserved; a sequence with n
maskable tokens (not [CLS]/[SEP]/[PAD]/[MASK], not padding) gets min(K, max(1, round(n * p)))
of them selected uniformly at random, so full-length sequences always fill all K slots and the
generator always sees a [B, K] tensor (static shapes for kernels and torch.compile). Unused slots
have weight 0.

Of the selected positions:
  electra (default, as in ELECTRA): 85% become [MASK], 15% keep their token, none random;
  bert: 80% [MASK], 10% a random non-special token, 10% keep.

The randomness of one sequence is a pure function of (seed, sample_id), where sample_id is the
sequence's global position in the training stream (consumed-sample counter). So masks are
dynamic (a sequence seen in a later epoch has a new sample_id, hence a new mask), and identical
whatever the number of ranks, the micro-batch split, or a resume in between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fast_electra_ds.data.seeding import derive_key


def sample_seed(seed: int, sample_id: int) -> int:
    """The seed of one sequence's masking RNG: its key, the trailing 0 naming masking's stream
    (another use of a sequence's randomness would take another number), shifted to < 2**63 for
    torch.Generator."""
    return derive_key(seed, sample_id, 0) >> 1


def num_predictions(seq_len: int, mask_prob: float) -> int:
    """K, the static number of prediction slots per sequence ([CLS] and [SEP] are never masked)."""
    return max(1, math.ceil(mask_prob * (seq_len - 2)))


@dataclass
class MaskedBatch:
    """A batch ready for the generator. B sequences of length L, K prediction slots each."""

    input_ids: torch.Tensor  # [B, L] int64, the original tokens, padded with [PAD]
    attention_mask: torch.Tensor  # [B, L] int64, 1 on tokens (incl. [CLS]/[SEP]), 0 on padding
    token_type_ids: torch.Tensor  # [B, L] int64, 0 up to the first [SEP], 1 after (segment B)
    masked_ids: torch.Tensor  # [B, L] int64, input_ids with the selected positions corrupted
    positions: torch.Tensor  # [B, K] int64, selected positions (0 in unused slots)
    labels: torch.Tensor  # [B, K] int64, original tokens at `positions`
    weights: torch.Tensor  # [B, K] float32, 1.0 on used slots, 0.0 on unused ones
    sample_ids: torch.Tensor  # [B] int64, global sample index of each sequence

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "MaskedBatch":
        return MaskedBatch(**{k: v.to(device, non_blocking=non_blocking)
                              for k, v in self.__dict__.items()})


class Masker:
    """Turns padded token ids into a MaskedBatch. Pure: same inputs and seed, same output."""

    def __init__(self, *, seq_len: int, vocab_size: int, mask_id: int, special_ids: Sequence[int],
                 mask_prob: float = 0.15, style: str = "electra", seed: int = 0):
        if style not in ("electra", "bert"):
            raise ValueError(f"masking style must be 'electra' or 'bert', got {style!r}")
        if not 0.0 < mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.seq_len, self.mask_id, self.seed = seq_len, mask_id, seed
        self.mask_prob = mask_prob
        self.k = num_predictions(seq_len, mask_prob)
        # share of selected positions that become [MASK], and that become a random token
        self.p_mask, self.p_random = (0.85, 0.0) if style == "electra" else (0.8, 0.1)
        special = torch.zeros(vocab_size, dtype=torch.bool)
        special[list(special_ids)] = True
        special[mask_id] = True
        self.special = special  # [V]
        self.random_pool = torch.nonzero(~special).squeeze(1)  # [V'] ids a random draw may give

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 sample_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
                 ) -> MaskedBatch:
        """token_type_ids [B, L] pass through unchanged (default: all 0, one segment)."""
        b, length = input_ids.shape  # [B, L]
        assert length == self.seq_len, (length, self.seq_len)
        k = self.k
        maskable = attention_mask.bool() & ~self.special[input_ids]  # [B, L]
        positions = torch.zeros(b, k, dtype=torch.long)
        weights = torch.zeros(b, k, dtype=torch.float32)
        masked_ids = input_ids.clone()
        for row in range(b):
            rng = torch.Generator().manual_seed(sample_seed(self.seed, int(sample_ids[row])))
            candidates = torch.nonzero(maskable[row]).squeeze(1)  # [n]
            n = candidates.numel()
            if n == 0:
                continue
            count = min(k, max(1, round(n * self.mask_prob)))
            chosen = candidates[torch.randperm(n, generator=rng)[:count]].sort().values
            action = torch.rand(count, generator=rng)
            to_mask = action < self.p_mask
            to_random = (action >= self.p_mask) & (action < self.p_mask + self.p_random)
            masked_ids[row, chosen[to_mask]] = self.mask_id
            if self.p_random > 0:
                draw = torch.randint(len(self.random_pool), (count,), generator=rng)
                masked_ids[row, chosen[to_random]] = self.random_pool[draw][to_random]
            positions[row, :count] = chosen
            weights[row, :count] = 1.0
        labels = torch.gather(input_ids, 1, positions)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        return MaskedBatch(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids,
                           masked_ids=masked_ids, positions=positions, labels=labels,
                           weights=weights, sample_ids=sample_ids)
