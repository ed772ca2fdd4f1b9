"""Untrusted checkpoints and ONNX files (#14): a stored config, data dict or model_kwargs of the wrong type and
malformed ONNX metadata (not JSON, missing keys, wrong types) give one line naming the file and the key, exit 2 in
the CLI, never an AttributeError/KeyError traceback; nothing is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mambaseg.cli import main
from mambaseg.config import config_from_dict, config_to_dict
from mambaseg.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("untrusted") / "images"
    d.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(d / "01.png")
    return d


def _good_ckpt() -> dict:
    from mambaseg.models import build_model

    net = build_model("unet_tiny", in_channels=3, out_channels=1)
    cfg = config_from_dict({"model": {"name": "unet_tiny"}, "data": {"patch_size": [32, 32]}})
    return {"model_name": "unet_tiny", "model_kwargs": {"in_channels": 3, "out_channels": 1},
            "state_dict": net.state_dict(), "config": config_to_dict(cfg), "data": {"spatial_dims": 2}}


def _set(d: dict, dotted: str, value) -> dict:
    *parents, leaf = dotted.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return d


_DELETE = object()
PLAN = {"patch_size": [16, 16, 16], "target_spacing": [1.0, 1.0, 1.0], "normalization": [{"scheme": "zscore_nonzero"}]}

# (key, bad value, key named in the message)
BAD_CHECKPOINTS = [
    ("config", "not a mapping", "config"),
    ("config", ["a", "list"], "config"),
    ("config.infer", "abc", "config.infer"),
    ("config.data", [1, 2], "config.data"),
    ("config.infer.overlap", "half", "config.infer.overlap"),
    ("config.infer.overlap", 5.0, "config.infer.overlap"),
    ("config.infer.mode", "banana", "config.infer.mode"),
    ("config.infer.patch_size", "32x32", "config.infer.patch_size"),
    ("config.infer.batch_size", 0, "config.infer.batch_size"),
    ("config.infer.threshold", "high", "config.infer.threshold"),
    ("config.data.fov", "yes", "config.data.fov"),
    ("data", "2d", "data"),
    ("data.spatial_dims", "2", "data.spatial_dims"),
    ("data.spatial_dims", 7, "data.spatial_dims"),
    ("data.fov_diameter", float("nan"), "data.fov_diameter"),
    ("data.threshold", [0.5], "data.threshold"),
    ("model_kwargs", ["in_channels", 3], "model_kwargs"),
    ("model_kwargs.in_channels", "3", "model_kwargs.in_channels"),
    ("model_name", 42, "model_name"),
]


@pytest.mark.parametrize("key,value,named", BAD_CHECKPOINTS, ids=[f"{k}={v!r}" for k, v, _ in BAD_CHECKPOINTS])
def test_checkpoint_fields_of_the_wrong_type(tmp_path, key, value, named):
    path = tmp_path / "bad.pt"
    save_checkpoint(_set(_good_ckpt(), key, value), path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: checkpoint key '{named}' must be ") and "\n" not in msg


@pytest.mark.parametrize("key,value,named", [
    ("data.plan", "plan", "data.plan"),
    ("data.plan.patch_size", [16, 16], "data.plan.patch_size"),
    ("data.plan.target_spacing", [1.0, 0.0, 1.0], "data.plan.target_spacing"),
    ("data.plan.normalization", [{"scheme": "magic"}], "data.plan.normalization"),
    ("data.plan.normalization", _DELETE, "data.plan.normalization"),
    ("data.labels", {"liver": "one"}, "data.labels"),
])
def test_3d_plan_fields(tmp_path, key, value, named):
    ck = _good_ckpt()
    ck["data"] = {"spatial_dims": 3, "plan": json.loads(json.dumps(PLAN))}
    path = tmp_path / "bad3d.pt"
    save_checkpoint(_set(ck, key, value), path)
    with pytest.raises(CheckpointError, match=rf"bad3d.pt: checkpoint key '{named}' (must be|is missing)"):
        load_checkpoint(path)


def test_good_and_shipped_checkpoints_pass(tmp_path):
    from pathlib import Path

    path = tmp_path / "good.pt"
    ck = _good_ckpt()
    ck["config"] = None  # absent sections are fine (defaults apply)
    save_checkpoint(ck, path)
    assert load_checkpoint(path)["model_name"] == "unet_tiny"
    weights = Path(__file__).resolve().parents[1] / "weights"
    for f in sorted(weights.glob("*.pt")):
        load_checkpoint(f)  # the shipped models' stored configs and 3D plan pass the same checks


@pytest.mark.parametrize("key,value", [("config", "oops"), ("config.infer", ["x"]), ("data", 3),
                                       ("data.spatial_dims", "two")])
def test_predict_cli_one_line_exit_2(tmp_path, images, capsys, key, value):
    path = tmp_path / "bad.pt"
    save_checkpoint(_set(_good_ckpt(), key, value), path)
    out = tmp_path / "pred"
    code = main(["predict", "-m", str(path), "-i", str(images), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert str(path) in err[0] and f"'{key}'" in err[0] and "Traceback" not in err[0]
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------ ONNX
def _onnx_file(path, meta_text: str | None):
    """A tiny valid ONNX model (Identity) carrying ``meta_text`` as its mambaseg metadata property."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logits"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta_text is not None:
        helper.set_model_props(model, {"mambaseg": meta_text})
    onnx.save(model, str(path))
    return path


GOOD_META = {"model_name": "unet_tiny", "model_kwargs": {"in_channels": 3, "out_channels": 1},
             "config": {"infer": {"patch_size": [32, 32]}}, "data": {"spatial_dims": 2}, "fixed_size": [32, 32],
             "in_channels": 3, "out_channels": 1, "spatial_dims": 2, "dynamic_batch": False}


def _meta(**changes) -> str:
    m = json.loads(json.dumps(GOOD_META))
    for k, v in changes.items():
        if v is _DELETE:
            del m[k]
        else:
            m[k] = v
    return json.dumps(m)


BAD_ONNX = [
    ("not json", "{not json", "not valid JSON"),
    ("a list", json.dumps([1, 2]), "must be a JSON object"),
    ("no in_channels", _meta(in_channels=_DELETE), "'in_channels' is missing"),
    ("no model_name", _meta(model_name=_DELETE), "'model_name' is missing"),
    ("no spatial_dims", _meta(spatial_dims=_DELETE), "'spatial_dims' is missing"),
    ("in_channels str", _meta(in_channels="3"), "'in_channels' must be a positive integer"),
    ("spatial_dims 4", _meta(spatial_dims=4), "'spatial_dims' must be 2 or 3"),
    ("fixed_size str", _meta(fixed_size="32x32"), "'fixed_size' must be null or 2 positive integers"),
    ("fixed_size 3 axes", _meta(fixed_size=[32, 32, 32]), "'fixed_size' must be null or 2 positive integers"),
    ("dynamic_batch str", _meta(dynamic_batch="yes"), "'dynamic_batch' must be true or false"),
    ("config str", _meta(config="cfg"), "'config' must be a mapping"),
    ("config.infer list", _meta(config={"infer": [1]}), "'config.infer' must be a mapping"),
    ("data str", _meta(data="2d"), "'data' must be a mapping"),
    ("model_kwargs list", _meta(model_kwargs=[1]), "'model_kwargs' must be a mapping"),
]


@pytest.mark.parametrize("name,text,expected", BAD_ONNX, ids=[b[0] for b in BAD_ONNX])
def test_malformed_onnx_metadata(tmp_path, name, text, expected):
    from mambaseg.apps.export import onnx_predictor, read_onnx_metadata

    path = _onnx_file(tmp_path / "bad.onnx", text)
    with pytest.raises(ValueError) as e:
        read_onnx_metadata(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and expected in msg and "\n" not in msg
    with pytest.raises(ValueError, match="bad.onnx"):
        onnx_predictor(path)


def test_good_onnx_metadata_runs(tmp_path):
    pytest.importorskip("onnxruntime")
    import torch

    from mambaseg.apps.export import onnx_predictor

    run, ck = onnx_predictor(_onnx_file(tmp_path / "ok.onnx", _meta()))
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(run(x), x) and ck["fixed_size"] == [32, 32]


@pytest.mark.parametrize("name,text,expected", [BAD_ONNX[0], BAD_ONNX[2], BAD_ONNX[10]],
                         ids=[BAD_ONNX[i][0] for i in (0, 2, 10)])
def test_predict_cli_malformed_onnx_one_line_exit_2(tmp_path, images, capsys, name, text, expected):
    pytest.importorskip("onnxruntime")
    path = _onnx_file(tmp_path / "bad.onnx", text)
    out = tmp_path / "pred"
    code = main(["predict", "-m", str(path), "-i", str(images), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert str(path) in err[0] and expected in err[0] and "Traceback" not in err[0]
    assert not out.exists()
