"""DeepSpeed JSON: auto resolution, mismatch reports, key checks, and every bundled file."""

import json
from pathlib import Path

import pytest

from fast_electra_ds.config import REPO_ROOT, load_config
from fast_electra_ds.errors import UserError
from fast_electra_ds.training.ds_config import (KNOWN_KEYS, check_keys, load_ds_config, precision,
                                                resolve_ds_config, zero_stage)

BUNDLED = sorted((REPO_ROOT / "ds_configs").glob("*.json"))


def test_bundled_configs_cover_the_promised_variants():
    kinds = {(zero_stage(json.loads(p.read_text())), precision(json.loads(p.read_text())))
             for p in BUNDLED}
    assert {(1, "bf16"), (2, "bf16"), (3, "bf16"), (2, "fp16")} <= kinds
    assert any(p.name.startswith("cpu") for p in BUNDLED)


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_every_bundled_config_resolves_and_deepspeed_accepts_it(path):
    from deepspeed.runtime.config import DeepSpeedConfig

    cfg = load_config("tiny", ["train.global_batch_size=32", "train.micro_batch_size=8"])
    two = resolve_ds_config(load_ds_config(str(path)), cfg, world_size=2, device="cuda")
    assert two["train_batch_size"] == 32 and two["train_micro_batch_size_per_gpu"] == 8
    assert two["gradient_accumulation_steps"] == 2 and two["gradient_clipping"] == 1.0
    # DeepSpeedConfig checks the batch arithmetic against this process's world of one
    ds = resolve_ds_config(load_ds_config(str(path)), cfg, world_size=1, device="cuda")
    assert ds["gradient_accumulation_steps"] == 4
    # DeepSpeed's own parser checks the nested blocks (its pydantic models forbid extra keys).
    parsed = DeepSpeedConfig(ds, mpu=None, mesh_device=None) if _takes_mesh() else \
        DeepSpeedConfig(ds)
    assert parsed.zero_optimization_stage == zero_stage(ds)


def _takes_mesh():
    import inspect

    from deepspeed.runtime.config import DeepSpeedConfig
    return "mesh_device" in inspect.signature(DeepSpeedConfig.__init__).parameters


def test_known_keys_exist_in_installed_deepspeed():
    import deepspeed

    root = Path(deepspeed.__file__).parent
    source = "\n".join(p.read_text(errors="ignore") for p in root.rglob("*.py"))
    stale = [k for k in KNOWN_KEYS if f'"{k}"' not in source and f"'{k}'" not in source]
    assert not stale, f"keys DeepSpeed no longer knows: {stale}"


def test_misspelled_top_level_key_is_an_error():
    with pytest.raises(UserError, match="did you mean 'zero_optimization'"):
        check_keys({"zero_optimisation": {"stage": 2}}, "x.json")


def test_every_mismatch_is_reported_at_once():
    cfg = load_config("tiny", ["train.global_batch_size=32", "train.micro_batch_size=8"])
    ds = {"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4,
          "gradient_clipping": 0.5, "optimizer": {"type": "Adam"},
          "zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"}}
    with pytest.raises(UserError) as e:
        resolve_ds_config(ds, cfg, world_size=1, device="cpu")
    msg = str(e.value)
    for needle in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_clipping",
                   "'optimizer' block", "zero_optimization.reduce_bucket_size"):
        assert needle in msg, needle


def test_batch_not_divisible_by_ranks():
    cfg = load_config("tiny", ["train.global_batch_size=24", "train.micro_batch_size=8"])
    with pytest.raises(UserError, match="not a multiple of"):
        resolve_ds_config({}, cfg, world_size=2, device="cpu")


def test_fp16_on_cpu_is_refused():
    cfg = load_config("tiny")
    with pytest.raises(UserError, match="fp16 is not supported on CPU"):
        resolve_ds_config({"fp16": {"enabled": True}}, cfg, world_size=1, device="cpu")


def test_bad_json_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_ds_config(str(p))
