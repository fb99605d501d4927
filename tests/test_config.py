"""Run config: recipes load, overrides are typed, mistakes are caught before any work starts."""

import subprocess
import sys

import pytest
import yaml

from fast_electra_ds.config import RunConfig, describe, field_docs, list_recipes, load_config
from fast_electra_ds.errors import UserError
from fast_electra_ds.method.modes import validate_config


def test_every_bundled_recipe_loads_and_validates():
    assert {"tiny", "small", "base", "large"} <= set(list_recipes())
    for name in list_recipes():
        cfg = load_config(name)
        validate_config(cfg, check_files=False)


def test_paper_shapes():
    small, base, large = (load_config(n).model for n in ("small", "base", "large"))
    assert (small.num_layers, small.hidden_size, small.embedding_size) == (12, 256, 128)
    assert (base.num_layers, base.hidden_size) == (12, 768)
    assert (large.num_layers, large.hidden_size) == (24, 1024)
    for name in ("small", "base", "large"):
        cfg = load_config(name)
        assert cfg.generator.hidden_size < cfg.model.hidden_size  # ELECTRA's smaller generator


def test_large_masks_a_quarter_as_electra_large():
    from fast_electra_ds.data.masking import num_predictions

    large = load_config("large")
    assert large.masking.mask_prob == 0.25 and large.data.seq_len == 512
    assert num_predictions(large.data.seq_len, large.masking.mask_prob) == 128  # ceil(.25 * 510)
    for name in ("small", "base"):
        assert load_config(name).masking.mask_prob == 0.15


def test_every_field_has_a_docstring():
    docs = field_docs()
    assert "model.hidden_size" in docs and "optim.lr" in docs and "mode" in docs
    missing = [k for k, v in docs.items() if not v]
    assert not missing, f"config fields without a docstring: {missing}"
    assert "optim.lr = 0.0005" in describe()


def test_overrides_are_typed():
    cfg = load_config("tiny", ["optim.lr=1e-4", "model.num_layers=3", "mode=electra",
                               "data.paths=a,b", "logging.tensorboard=true"])
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.model.num_layers == 3 and cfg.mode == "electra"
    assert cfg.data.paths == ["a", "b"] and cfg.logging.tensorboard is True


@pytest.mark.parametrize("override, needle", [
    ("model.hidden_sise=3", "Did you mean 'model.hidden_size'"),
    ("nonsense=1", "Valid keys"),
    ("model.num_layers=two", "expected an integer"),
    ("mode=bert", "one of fast-electra, electra, mlm"),
    ("model=3", "unknown config key 'model'"),
    ("optim.lr", "not of the form key=value"),
])
def test_bad_overrides_name_the_problem(override, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_config("tiny", [override])


def test_unknown_key_in_recipe_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  hiden_size: 3\n")
    with pytest.raises(UserError, match="unknown config key 'model.hiden_size'"):
        load_config(str(path))


def test_validation_lists_every_problem_at_once():
    cfg = load_config("tiny", ["temperature.t0=0.5", "temperature.tau=0", "data.seq_len=4096",
                               "model.num_heads=3"])
    with pytest.raises(UserError) as e:
        cfg.validate(check_files=False)
    msg = str(e.value)
    for needle in ("temperature.t0", "temperature.tau", "max_position_embeddings",
                   "num_heads=3 must divide"):
        assert needle in msg


def test_validation_checks_files(tmp_path):
    cfg = load_config("tiny", [f"data.paths={tmp_path}/nope", "ds_config=missing.json",
                               "generator.path=./no/such/folder"])
    with pytest.raises(UserError) as e:
        validate_config(cfg)
    msg = str(e.value)
    assert "prepare-data" in msg and "missing.json" in msg and "no/such/folder" in msg


def test_fast_electra_needs_a_generator():
    cfg = load_config("tiny", ["generator.path="])
    with pytest.raises(UserError, match="needs generator.path"):
        validate_config(cfg, check_files=False)


def test_the_config_and_its_mode_are_checked_in_one_error():
    """config/ imports no mode: RunConfig.validate checks the config alone, validate_config adds
    what the mode's class says, in the same list."""
    cfg = load_config("tiny", ["generator.path=", "temperature.t0=0.5"])
    with pytest.raises(UserError) as e:
        cfg.validate(check_files=False)
    assert "temperature.t0" in str(e.value) and "generator.path" not in str(e.value)
    with pytest.raises(UserError) as e:
        validate_config(cfg, check_files=False)
    msg = str(e.value)
    assert msg.startswith("invalid run config:\n  - ")
    assert "temperature.t0 must be >= 1" in msg and "needs generator.path" in msg


def test_save_round_trip(tmp_path):
    cfg = load_config("small", ["optim.lr=3e-4"])
    cfg.save(tmp_path / "config.yaml")
    again = load_config(str(tmp_path / "config.yaml"))
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["optim"]["lr"] == 3e-4
    assert RunConfig() != cfg


def test_cli_config_prints_resolved_and_rejects_typos():
    ok = subprocess.run([sys.executable, "-m", "fast_electra_ds", "config", "--config", "tiny",
                         "optim.lr=2e-3"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["optim"]["lr"] == 2e-3
    bad = subprocess.run([sys.executable, "-m", "fast_electra_ds", "config", "--config", "tiny",
                          "optim.lrr=2e-3"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "unknown config key 'optim.lrr'" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "fast_electra_ds", "config", "--config",
                              "nosuch"], capture_output=True, text=True)
    assert missing.returncode == 2 and "unknown recipe 'nosuch'" in missing.stderr


def test_moved_eval_keys_say_where_they_went_and_eval_is_checked():
    with pytest.raises(UserError, match="'train.eval_every' .* is now eval.every"):
        load_config("tiny", ["train.eval_every=5"])
    with pytest.raises(UserError, match="now eval.num_sequences"):
        load_config("tiny", ["train.eval_batches=5"])
    cfg = load_config("tiny", ["eval.judge=self", "eval.num_sequences=0", "eval.every=-1"])
    with pytest.raises(UserError) as e:
        validate_config(cfg, check_files=False)
    for message in ("eval.judge=self means mode=electra's own generator",
                    "eval.num_sequences must be >= 1", "eval.every must be >= 0"):
        assert message in str(e.value)
    validate_config(load_config("tiny", ["mode=electra", "eval.judge=self"]), check_files=False)


def test_a_run_config_from_before_the_move_still_loads(tmp_path):
    """export / evaluate read RUN_DIR/config.yaml of runs made before eval.* existed."""
    old = load_config("tiny").to_dict()
    del old["eval"]
    old["train"].update(eval_every=123, eval_batches=7)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.warns(UserWarning) as caught:
        cfg = load_config(str(path))
    assert cfg.eval.every == 123 and cfg.eval.num_sequences == 1024  # the default
    messages = " ".join(str(w.message) for w in caught)
    assert "is now eval.every; its value 123 is used" in messages
    assert "is now eval.num_sequences" in messages and "its value is ignored" in messages
