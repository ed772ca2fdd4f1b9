"""Config: YAML loading, overrides, unknown keys and bad values raise with the key named."""

from __future__ import annotations

import contextlib
import re
import sys

import pytest

from mambaseg.config import Config, ConfigError, apply_overrides, config_from_dict, config_to_dict, load_config


def test_load_and_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\nmodel: {name: unet_tiny, kwargs: {widths: [4, 8]}}\ntrain: {epochs: 7}\n")
    cfg = load_config(p, ["train.epochs=2", "data.patch_size=[32, 48]", "model.kwargs.widths=[2, 4]"])
    assert cfg.seed == 3 and cfg.train.epochs == 2 and cfg.data.patch_size == (32, 48)
    assert cfg.model.kwargs == {"widths": [2, 4]}
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("raw,needle", [
    ({"trian": {}}, "trian"),
    ({"train": {"epoch": 3}}, "train.epoch"),
    ({"train": {"epochs": "many"}}, "train.epochs"),
    ({"train": {"amp": "maybe"}}, "train.amp"),
    ({"data": {"patch_size": "big"}}, "data.patch_size"),
])
def test_bad_keys_and_values(raw, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        config_from_dict(raw)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Config(), ["train.epochs"])
    with pytest.raises(ConfigError, match="optim.lrr"):
        apply_overrides(Config(), ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


# --- validation at the door (#14, #13): every key checked for type and range when the config is loaded ---

@pytest.mark.parametrize("key,value,expected", [
    ("train.epochs", "0", ">= 1"),
    ("train.epochs", "2.5", "integer"),
    ("train.epochs", "true", "number"),
    ("optim.lr", ".inf", "finite"),
    ("optim.lr", ".nan", "finite"),
    ("optim.lr", "0", "> 0"),
    ("optim.lr", "-1e-3", "> 0"),
    ("train.grad_clip", "-1", ">= 0"),
    ("data.val_fraction", "-0.5", r"\[0, 1\)"),
    ("data.val_fraction", "1", r"\[0, 1\)"),
    ("train.val_every", "0", ">= 1"),
    ("train.batch_size", "0", ">= 1"),
    ("train.iters_per_epoch", "0", ">= 1"),
    ("seed", "-1", ">= 0"),
    ("infer.mode", "banana", "gaussian, constant"),
    ("infer.overlap", "1", r"\[0, 1\)"),
    ("data.patch_size", '[32, "a", 32]', "positive integers"),
    ("data.patch_size", "[32, 0]", "positive integers"),
    ("data.patch_size", "[32.5, 32]", "positive integers"),
    ("data.patch_size", "[32]", "2 or 3"),
    ("infer.patch_size", "[-8, 8]", "positive integers"),
    ("data.num_classes", "1", ">= 2"),
    ("data.layout", "nonsense", "one of"),
    ("loss.name", "mse", "one of"),
    ("optim.schedule", "linear", "one of"),
    ("train.device", "tpu", "cuda"),
])
def test_out_of_range_values_are_refused_naming_key_value_and_expectation(tmp_path, key, value, expected):
    p = tmp_path / "c.yaml"
    p.write_text("model: {name: unet_tiny}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, [f"{key}={value}"])
    msg = str(e.value)
    assert "\n" not in msg and f"'{key}'" in msg
    assert re.search(expected, msg), msg
    # the same value written in the file: the message also names the file
    section, _, name = key.rpartition(".")
    p.write_text(f"{section}: {{{name}: {value}}}\n" if section else f"{name}: {value}\n")
    with pytest.raises(ConfigError, match=re.escape(str(p)) + f".*'{re.escape(key)}'"):
        load_config(p)


def test_valid_edge_values_accepted():
    cfg = config_from_dict({"seed": 0, "train": {"epochs": 1, "grad_clip": None, "val_every": 1, "batch_size": 1},
                            "data": {"val_fraction": 0.0, "patch_size": [8, 8, 8]},
                            "optim": {"lr": 1e-6}, "infer": {"mode": "constant", "patch_size": []}})
    assert cfg.train.grad_clip == 0 and cfg.data.val_fraction == 0.0 and cfg.infer.mode == "constant"
    assert config_from_dict({"train": {"epochs": 3.0}}).train.epochs == 3  # an integral float is an integer
    assert isinstance(config_from_dict({"train": {"epochs": 3.0}}).train.epochs, int)


def test_cuda_device_without_cuda_is_refused(monkeypatch):
    import torch

    from mambaseg.config import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"'train\.device'.*CUDA is not available"):
        check_device("cuda")
    check_device("cpu")
    check_device("auto")


def test_train_cli_device_cuda_without_cuda_one_line_exit_2(tmp_path, capsys, monkeypatch):
    import torch

    from mambaseg.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p = tmp_path / "c.yaml"
    p.write_text("model: {name: unet_tiny}\ndata: {layout: synthetic_drive}\ntrain: {device: cuda}\n")
    assert main(["train", str(p), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.device" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def _parsed_train_config(monkeypatch, argv):
    """Run `mambaseg train ARGV` up to the config (train() replaced) and return the config it got."""
    import mambaseg.engine.train as engine_train
    from mambaseg.cli import main

    got = {}

    def fake_train(cfg, out, resume=False, progress=True):
        got["cfg"] = cfg
        return {"train_seconds": 0, "epochs_done": 0, "best_val_dice": 0.0}

    monkeypatch.setattr(engine_train, "train", fake_train)
    rc = main(["train", *argv])
    return rc, got.get("cfg")


def test_repeated_set_all_applied_and_set_before_config(tmp_path, monkeypatch):
    p = tmp_path / "c.yaml"
    p.write_text("model: {name: unet_tiny}\ntrain: {epochs: 7}\n")
    out = str(tmp_path / "run")
    rc, cfg = _parsed_train_config(monkeypatch, [str(p), "--set", "train.epochs=2", "--set", "seed=5",
                                                 "--set", "optim.lr=0.01", "data.val_fraction=0.1", "--out", out])
    assert rc == 0 and cfg.train.epochs == 2 and cfg.seed == 5 and cfg.optim.lr == 0.01
    assert cfg.data.val_fraction == 0.1
    rc, cfg = _parsed_train_config(monkeypatch, ["--set", "train.epochs=3", "seed=4", str(p), "--out", out])
    assert rc == 0 and cfg.train.epochs == 3 and cfg.seed == 4
    rc, cfg = _parsed_train_config(monkeypatch, ["--set", "train.epochs=3", str(p), "--set", "seed=9", "--out", out])
    assert rc == 0 and cfg.train.epochs == 3 and cfg.seed == 9


def test_train_cli_without_config_one_line_exit_2(capsys):
    from mambaseg.cli import main

    assert main(["train", "--set", "train.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config file is required" in err


class TooMuchWork(Exception):
    """Raised by :func:`call_budget` once its budget of Python calls is spent."""


#: Python function calls a refused alias bomb may cost: refusing the documents below takes about 10 000 to 20 000
#: calls (most of them PyYAML's scanner); expanding the billion-laughs one node by node would take ~10**9
CALL_BUDGET = 100_000


@contextlib.contextmanager
def call_budget(limit: int = CALL_BUDGET):
    """Count the Python function calls made inside the block (a measure of work that does not depend on how busy
    the machine is) and raise :class:`TooMuchWork` as soon as there are more than ``limit``; yields a one-item list
    holding the count so far."""
    calls = [0]
    previous = sys.getprofile()

    def profile(frame, event, arg):
        if event == "call":
            calls[0] += 1
            if calls[0] > limit:
                raise TooMuchWork(f"more than {limit} Python calls")

    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)


BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize("text,needle", [
    (BOMB, "expands to more than"),
    ("model: {name: unet_tiny, kwargs: {x: &x [1, 2]}}\n" + "".join(f"y{i}: *x\n" for i in range(150)), "aliases"),
    ("model: {name: unet_tiny, kwargs: {x: &x [1, *x]}}\n", "recursive"),
])
def test_yaml_alias_bombs_refused_quickly_naming_the_file(tmp_path, text, needle):
    p = tmp_path / "bomb.yaml"
    p.write_text(text)
    with call_budget() as calls, pytest.raises(ConfigError) as e:
        load_config(p)
    assert calls[0] > 0  # the counter saw the work: refused within the budget, not by skipping the count
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and needle in msg, msg


def test_yaml_bomb_in_set_value_refused():
    assert apply_overrides(Config(), ["model.kwargs.x=[&a [1], *a]"]).model.kwargs["x"] == [[1], [1]]
    with pytest.raises(ConfigError, match=r"--set model\.kwargs\.x.*aliases"):
        apply_overrides(Config(), ["model.kwargs.x=[&a 1, " + ", ".join(["*a"] * 200) + "]"])


def test_a_few_anchors_still_work(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {patch_size: &ps [32, 48]}\ninfer: {patch_size: *ps}\nmodel: {name: unet_tiny}\n")
    cfg = load_config(p)
    assert cfg.data.patch_size == cfg.infer.patch_size == (32, 48)


def test_report_reads_a_run_config_within_the_alias_budget(tmp_path, caplog):
    from mambaseg.apps.report import collect_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(BOMB)
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.5}\n')
    with call_budget() as calls:
        info = collect_report(run)
    assert calls[0] > 0
    assert info["config"] is None and info["history"] and "expands to more than" in caplog.text


@pytest.mark.parametrize("where,expect", [
    (["train.lr=0.1"], "Did you mean 'optim.lr'?"),
    ({"train": {"lr": 0.1}}, "Did you mean 'optim.lr'?"),
    ({"lr": 0.1}, "Did you mean 'optim.lr'?"),
    (["optim.epochs=3"], "Did you mean 'train.epochs'?"),
    (["train.patch_size=[8, 8]"], "Did you mean 'data.patch_size' or 'infer.patch_size'?"),
])
def test_unknown_key_points_to_its_section(where, expect):
    """A key that exists in another section is named with that section (overrides and config files alike)."""
    with pytest.raises(ConfigError) as info:
        if isinstance(where, list):
            apply_overrides(Config(), where)
        else:
            config_from_dict(where)
    assert expect in str(info.value) and "\n" not in str(info.value)


def test_unknown_key_without_other_section_keeps_the_close_match():
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), ["optim.lrr=1"])
    assert "Did you mean 'lr'?" in str(info.value)
