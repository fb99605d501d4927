"""What every mode is timed on: the shape (a recipe with the suite's micro-batch and sequence
length), its run config, synthetic masked batches, and the frozen generator a fast-electra run
would load.

Batches are synthetic token ids of full length (no padding), masked by masking.Masker before the
clock starts: in training the loader masks (in its workers when data.num_workers > 0), not the
step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fast_electra_ds.config import RunConfig, load_config
from fast_electra_ds.data.masking import MaskedBatch, Masker, num_predictions
from fast_electra_ds.method.flops import Encoder
from fast_electra_ds.method.models import build_generator
from fast_electra_ds.method.modes import validate_config

# Synthetic vocabulary layout: ids 0-4 are the special tokens, the rest ordinary.
SPECIAL_IDS = {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
NUM_SPECIAL = len(SPECIAL_IDS)
ELECTRA_VOCAB = 30522  # BERT / ELECTRA uncased WordPiece, for shapes without data
NUM_BATCHES = 4  # distinct batches cycled through, so no step sees the previous one's input
# On a CPU the steps run on one intra-op thread: on a shared machine torch's OpenMP threads
# spin-wait for a descheduled peer, and 2-thread steps of the same work took 4-15 s where one
# thread took 1.4-3 s; the comparison between modes is what counts, not the machine's best time.
CPU_THREADS = 1


@dataclass(frozen=True)
class Spec:
    """The timed shape, threads, and the frozen generator's folder (`save_frozen_generator`).
    Plain values: the memory child processes receive it as JSON."""

    recipe: str
    batch: int
    seq_len: int
    vocab_size: int
    device: str
    threads: int  # torch intra-op threads; 0 = torch's default
    generator_dir: str
    overrides: tuple[str, ...] = ()  # further config overrides, e.g. train.compile=true

    def config(self) -> RunConfig:
        # cpu: fp32 ZeRO-0 (DeepSpeed refuses fp16 there); cuda: the recipe's own ds_config
        overrides = [f"data.seq_len={self.seq_len}", f"train.micro_batch_size={self.batch}",
                     f"train.global_batch_size={self.batch}", f"device={self.device}",
                     "optim.warmup_steps=1", "data.num_workers=0",
                     f"generator.path={self.generator_dir}"]
        if self.device == "cpu":
            overrides.append("ds_config=ds_configs/cpu_fp32.json")
        overrides += list(self.overrides)
        cfg = load_config(self.recipe, overrides)
        validate_config(cfg, check_files=False)
        return cfg

    @property
    def mask_prob(self) -> float:
        return self.config().masking.mask_prob

    def encoders(self) -> tuple[Encoder, Encoder]:
        """(discriminator, generator) shapes; the frozen generator is saved at the latter."""
        cfg = self.config()
        return (Encoder.discriminator(cfg.model),
                Encoder.generator(cfg.generator, cfg.model.embedding_size))

    def describe(self) -> str:
        disc, gen = self.encoders()
        return (f"`{self.recipe}` recipe: discriminator {disc.describe()}, generator "
                f"{gen.describe()}; micro-batch {self.batch} x seq_len {self.seq_len}, "
                f"{num_predictions(self.seq_len, self.mask_prob)} masked positions per "
                f"sequence, vocabulary {self.vocab_size:,} (synthetic ids)")


def set_threads(spec: Spec) -> None:
    """torch's intra-op threads for this process (0 leaves torch's default)."""
    if spec.threads:
        torch.set_num_threads(spec.threads)


def make_batches(spec: Spec, device: torch.device) -> list[MaskedBatch]:
    """NUM_BATCHES masked batches of full-length sequences [CLS] w_1 ... w_{L-2} [SEP]."""
    masker = Masker(seq_len=spec.seq_len, vocab_size=spec.vocab_size, mask_id=SPECIAL_IDS["mask"],
                    special_ids=list(SPECIAL_IDS.values()), mask_prob=spec.mask_prob, seed=0)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for i in range(NUM_BATCHES):
        ids = torch.randint(NUM_SPECIAL, spec.vocab_size, (spec.batch, spec.seq_len),
                            generator=gen)  # [B, L]
        ids[:, 0], ids[:, -1] = SPECIAL_IDS["cls"], SPECIAL_IDS["sep"]
        sample_ids = torch.arange(i * spec.batch, (i + 1) * spec.batch)  # [B]
        batches.append(masker(ids, torch.ones_like(ids), sample_ids).to(device))
    return batches


def save_frozen_generator(spec: Spec) -> None:
    """A freshly initialized generator of the recipe's shape as a HF folder at
    spec.generator_dir: what a mode=mlm run of the same recipe exports and a fast-electra run
    loads (weights do not change the cost)."""
    cfg = spec.config()
    torch.manual_seed(cfg.seed)
    build_generator(cfg.generator, cfg.model, vocab_size=spec.vocab_size,
                    pad_id=SPECIAL_IDS["pad"]).save_pretrained(Path(spec.generator_dir))
