"""Masker: rate, static K, what may be selected, the corruption split, and determinism."""

from __future__ import annotations

import pytest
import torch

from fast_electra_ds.data.masking import Masker, num_predictions

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = [PAD, UNK, CLS, SEP, MASK]
VOCAB = 300
SEQ_LEN = 64


def make_batch(lengths: list[int], seed: int = 0, with_unk: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids [B, L] = [CLS] random ordinary tokens [SEP] then [PAD]; attention_mask [B, L]."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.full((len(lengths), SEQ_LEN), PAD, dtype=torch.int64)
    attention_mask = torch.zeros(len(lengths), SEQ_LEN, dtype=torch.int64)
    for row, n in enumerate(lengths):
        input_ids[row, 1:n - 1] = torch.randint(len(SPECIAL), VOCAB, (n - 2,), generator=gen)
        input_ids[row, 0], input_ids[row, n - 1] = CLS, SEP
        if with_unk and n > 4:
            input_ids[row, 2] = UNK
        attention_mask[row, :n] = 1
    return input_ids, attention_mask


def masker(style: str = "electra", seed: int = 0) -> Masker:
    return Masker(seq_len=SEQ_LEN, vocab_size=VOCAB, mask_id=MASK, special_ids=SPECIAL,
                  style=style, seed=seed)


def mask_many(style: str, num_rows: int = 2000, seed: int = 0):
    lengths = [SEQ_LEN if r % 2 == 0 else 3 + (r * 7) % (SEQ_LEN - 3) for r in range(num_rows)]
    input_ids, attention_mask = make_batch(lengths, seed=1, with_unk=True)
    return input_ids, attention_mask, masker(style, seed)(input_ids, attention_mask,
                                                          torch.arange(num_rows))


def test_static_k_and_selection_count():
    k = num_predictions(SEQ_LEN, 0.15)
    assert k == 10  # ceil(0.15 * 62)
    for lengths in ([SEQ_LEN] * 3, [5, 17, SEQ_LEN, 2]):
        input_ids, attention_mask = make_batch(lengths)
        out = masker()(input_ids, attention_mask, torch.arange(len(lengths)))
        for name in ("positions", "labels", "weights"):
            assert getattr(out, name).shape == (len(lengths), k), name
        for row, n in enumerate(lengths):
            maskable = max(n - 2, 0)
            expected = min(k, max(1, round(maskable * 0.15))) if maskable else 0
            assert int(out.weights[row].sum()) == expected


def test_rate_is_15_percent_of_maskable_tokens():
    input_ids, attention_mask, out = mask_many("electra")
    maskable = (attention_mask.bool() & (input_ids >= len(SPECIAL))).sum()
    rate = float(out.weights.sum() / maskable)
    assert abs(rate - 0.15) < 0.01, rate


@pytest.mark.parametrize("style", ["electra", "bert"])
def test_never_special_tokens_or_padding(style):
    input_ids, attention_mask, out = mask_many(style)
    used = out.weights.bool()  # [B, K]
    rows = torch.arange(len(input_ids))[:, None].expand_as(out.positions)
    chosen_tokens = input_ids[rows[used], out.positions[used]]
    assert (chosen_tokens >= len(SPECIAL)).all()  # no [PAD] [UNK] [CLS] [SEP] [MASK]
    assert attention_mask[rows[used], out.positions[used]].eq(1).all()
    assert torch.equal(out.labels[used], chosen_tokens)
    # only selected positions change; unused slots carry weight 0 and position 0
    changed = out.masked_ids != input_ids
    selected = torch.zeros_like(changed)
    selected[rows[used], out.positions[used]] = True
    assert not (changed & ~selected).any()
    assert out.positions[~used].eq(0).all()
    # positions of a row are distinct
    for row in range(len(input_ids)):
        p = out.positions[row][used[row]]
        assert len(set(p.tolist())) == len(p)


def _corruption_shares(style: str) -> tuple[float, float, float]:
    input_ids, _, out = mask_many(style, num_rows=4000)
    used = out.weights.bool()
    rows = torch.arange(len(input_ids))[:, None].expand_as(out.positions)
    after = out.masked_ids[rows[used], out.positions[used]]
    before = out.labels[used]
    n = len(after)
    masked = float((after == MASK).sum()) / n
    kept = float((after == before).sum()) / n
    random = float(((after != MASK) & (after != before)).sum()) / n
    return masked, kept, random


def test_electra_split_85_15():
    masked, kept, random = _corruption_shares("electra")
    assert abs(masked - 0.85) < 0.02 and abs(kept - 0.15) < 0.02 and random == 0.0


def test_bert_split_80_10_10():
    masked, kept, random = _corruption_shares("bert")
    # a random draw can equal the original token (1 in 295): it then counts as kept
    assert abs(masked - 0.80) < 0.02 and abs(kept - 0.10) < 0.02 and abs(random - 0.10) < 0.02
    input_ids, _, out = mask_many("bert")
    replaced = (out.masked_ids != input_ids) & (out.masked_ids != MASK)
    assert (out.masked_ids[replaced] >= len(SPECIAL)).all()  # random tokens are never special


@pytest.mark.parametrize("style", ["electra", "bert"])
def test_masks_are_a_function_of_seed_and_sample_id(style):
    input_ids, attention_mask = make_batch([SEQ_LEN] * 8)
    ids = torch.arange(100, 108)
    a = masker(style)(input_ids, attention_mask, ids)
    b = masker(style)(input_ids, attention_mask, ids)
    for name, value in a.__dict__.items():
        assert torch.equal(value, getattr(b, name)), name
    # a row's mask depends on its own sample id only, not on its neighbours or batch position
    swapped = masker(style)(input_ids.flip(0), attention_mask.flip(0), ids.flip(0))
    assert torch.equal(swapped.masked_ids.flip(0), a.masked_ids)
    assert torch.equal(swapped.positions.flip(0), a.positions)
    # other sample ids (a later epoch) or another seed -> other masks
    other_ids = masker(style)(input_ids, attention_mask, ids + 8)
    other_seed = masker(style, seed=1)(input_ids, attention_mask, ids)
    for other in (other_ids, other_seed):
        differs = [not torch.equal(x, y) for x, y in zip(a.positions, other.positions)]
        assert sum(differs) >= 7


def test_rows_without_maskable_tokens():
    input_ids, attention_mask = make_batch([2, SEQ_LEN])
    input_ids[1, 1:SEQ_LEN - 1] = UNK  # nothing but specials
    out = masker()(input_ids, attention_mask, torch.arange(2))
    assert out.weights.sum() == 0 and torch.equal(out.masked_ids, input_ids)


def test_bad_arguments():
    with pytest.raises(ValueError, match="style"):
        Masker(seq_len=8, vocab_size=10, mask_id=4, special_ids=[0], style="roberta")
    with pytest.raises(ValueError, match="mask_prob"):
        Masker(seq_len=8, vocab_size=10, mask_id=4, special_ids=[0], mask_prob=0.0)
