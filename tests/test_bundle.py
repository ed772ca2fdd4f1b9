"""MONAI bundle export (#13): files and metadata, network_def rebuilt by MONAI's ConfigParser gives our model's
outputs, the bundle's MONAI preprocessing equals mambaseg's 3D normalisation, MONAI's bundle runner segments tiny
NIfTI / PNG inputs exactly like ``mambaseg predict``, and the CLI refuses an existing output folder."""

from __future__ import annotations

import json
from pathlib import Path

import monai
import monai.bundle
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

from mambaseg.apps.bundle import REQUIRED_METADATA_KEYS, check_metadata, export_bundle
from mambaseg.cli import main
from mambaseg.data.errors import DataError
from mambaseg.data.plans.preprocess import preprocess_case
from mambaseg.engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mambaseg.engine.predict import predict
from mambaseg.models import build_model


@pytest.fixture(autouse=True)
def _grad_mode_restored():
    """A bundle run switches autograd off around its inference (``$torch.set_grad_enabled(False)`` ... ``True``, as
    MONAI bundles do); a run that fails in between (the empty-folder tests) leaves it off in this process, which
    would break every later test that trains."""
    yield
    torch.set_grad_enabled(True)


TILE_3D, TILE_2D = [16, 16, 16], [32, 32]
MR_PLAN = {"version": 1, "modality": ["MR"], "normalization": [{"scheme": "zscore_nonzero"}],
           "target_spacing": [1.0, 1.0, 1.0], "patch_size": TILE_3D, "crop_nonzero": True, "image_order": 3,
           "orientation": "RAS"}


@pytest.fixture(autouse=True)
def _chunked_scan(monkeypatch):
    monkeypatch.setenv("MAMBASEG_SCAN_BACKEND", "chunked")  # pure PyTorch scan: no kernel build in these tests


def _ckpt3d(path: Path, plan: dict = MR_PLAN, seed: int = 0) -> Path:
    torch.manual_seed(seed)  # seed 0 predicts both classes on the phantom below
    net = build_model("dm_segnet_tiny")
    save_checkpoint({"model_name": "dm_segnet_tiny", "model_kwargs": {}, "state_dict": net.state_dict(),
                     "config": {"infer": {"overlap": 0.25, "batch_size": 2}},
                     "data": {"spatial_dims": 3, "plan": plan, "labels": {"background": 0, "lesion": 1}}}, path)
    return path


def _ckpt2d(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = build_model("unet_tiny", in_channels=3, out_channels=1)
    save_checkpoint({"model_name": "unet_tiny", "model_kwargs": {"in_channels": 3, "out_channels": 1},
                     "state_dict": net.state_dict(),
                     "config": {"data": {"patch_size": TILE_2D}, "infer": {"overlap": 0.25, "threshold": 0.5}},
                     "data": {"spatial_dims": 2}}, path)
    return path


def _volume(seed: int = 0, shape=(20, 22, 18)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    img[2:-2, 3:-2, 2:-2] = rng.normal(100, 20, (shape[0] - 4, shape[1] - 5, shape[2] - 4))
    img[6:12, 8:14, 5:11] += 80
    img[3:6, 4:7, 3:6] = 0  # zeros inside the non-zero box: z-score over non-zero voxels only, zeros kept
    return img


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAMBASEG_SCAN_BACKEND", "chunked")
        c3, c2 = _ckpt3d(root / "c3.pt"), _ckpt2d(root / "c2.pt")
        b3 = export_bundle(c3, root / "b3")
        assert main(["export", "--model", str(c2), "--bundle", str(root / "b2")]) == 0  # through the CLI
    return root, {"3d": (c3, Path(b3["path"])), "2d": (c2, root / "b2")}


def _parser(bundle: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    return parser


@pytest.mark.parametrize("kind", ["3d", "2d"])
def test_bundle_files_and_metadata(bundles, kind):
    _, b = bundles
    ckpt, bundle = b[kind]
    for rel in ("configs/metadata.json", "configs/inference.json", "configs/logging.conf", "models/model.pt",
                "docs/README.md", "LICENSE"):
        assert (bundle / rel).is_file(), rel
        assert (bundle / rel).stat().st_mode & 0o777 == 0o666 & ~_umask(), rel
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    inf = json.loads((bundle / "configs" / "inference.json").read_text())
    assert check_metadata(meta) == []
    assert meta["monai_version"] == monai.__version__ and meta["pytorch_version"] == torch.__version__.split("+")[0]
    assert meta["license"] == "Apache-2.0" and meta["authors"]
    assert "Apache License" in (bundle / "LICENSE").read_text()
    inp, out = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    tile = TILE_3D if kind == "3d" else TILE_2D
    assert inp["spatial_shape"] == tile and out["spatial_shape"] == tile and inp["is_patch_data"] is True
    assert (inp["num_channels"], out["num_channels"]) == ((1, 2) if kind == "3d" else (3, 1))
    assert inp["dtype"] == "float32" and inp["type"] == "image"
    assert out["format"] == ("labels" if kind == "3d" else "classes")
    if kind == "3d":
        assert "lesion" in out["channel_def"]["1"]
    # network_def: our registry, the checkpoint's model name and kwargs
    net_def = inf["network_def"]
    assert net_def["_target_"] == "mambaseg.models.build_model"
    assert net_def["name"] == load_checkpoint(ckpt)["model_name"]
    if kind == "3d":
        assert inf["inferer"]["_target_"] == "SlidingWindowInferer" and inf["inferer"]["roi_size"] == tile
        assert inf["inferer"]["overlap"] == 0.25 and inf["inferer"]["mode"] == "gaussian"
    else:  # mambaseg predict's own steps, configured by the checkpoint's stored config and data
        assert inf["inferer"]["_target_"] == "mambaseg.apps.bundle_components.SlidingWindowInferer2D"
        setup = json.loads((bundle / "configs" / "mambaseg.json").read_text())
        assert setup["config"]["infer"] == {"overlap": 0.25, "threshold": 0.5} and setup["model_name"] == "unet_tiny"
    assert meta["schema"] == "configs/metadata_schema.json" and (bundle / meta["schema"]).is_file()
    readme = (bundle / "docs" / "README.md").read_text()
    assert "python -m monai.bundle run --config_file configs/inference.json" in readme
    if kind == "2d":
        assert ("unet_tiny" in readme) and "in_channels" in json.dumps(net_def)


def _umask() -> int:
    import os

    m = os.umask(0)
    os.umask(m)
    return m


def test_check_metadata_names_missing_keys(bundles):
    _, b = bundles
    meta = json.loads((b["3d"][1] / "configs" / "metadata.json").read_text())
    assert set(REQUIRED_METADATA_KEYS) <= set(meta)
    del meta["task"]
    del meta["network_data_format"]["inputs"]["image"]["value_range"]
    assert check_metadata(meta) == ["task", "network_data_format.inputs.image.value_range"]
    meta["network_data_format"]["outputs"] = {}
    assert "network_data_format.outputs" in check_metadata(meta)


@pytest.mark.parametrize("kind,shape", [("3d", (2, 1, 16, 16, 16)), ("2d", (2, 3, 32, 32))])
def test_network_def_loads_model_pt_same_outputs(bundles, kind, shape):
    _, b = bundles
    ckpt, bundle = b[kind]
    net = _parser(bundle).get_parsed_content("network_def")
    state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    net.eval()
    ours = model_from_checkpoint(load_checkpoint(ckpt), ckpt).eval()
    assert type(net) is type(ours)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, ref = net(x), ours(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("plan", [
    MR_PLAN,
    dict(MR_PLAN, modality=["CT"], normalization=[{"scheme": "ct", "lower": 60.0, "upper": 170.0, "mean": 105.0,
                                                   "std": 25.0}]),
    dict(MR_PLAN, modality=["CT"], normalization=[{"scheme": "ct_window", "lower": 50.0, "upper": 150.0}]),
], ids=["mr_zscore_nonzero", "ct", "ct_window"])
def test_bundle_preprocessing_matches_ours(tmp_path, plan):
    """At the target spacing the bundle's MONAI preprocessing (orientation, non-zero crop, normalisation) gives
    mambaseg's preprocessed array; the input is stored LPS-ish (x flipped) so the reorientation is exercised."""
    bundle = Path(export_bundle(_ckpt3d(tmp_path / "c.pt", plan), tmp_path / "b")["path"])
    img = _volume(1)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    f = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(img, affine), f)
    pre = _parser(bundle).get_parsed_content("preprocessing")
    got = np.asarray(pre({"image": str(f)})["image"])
    ref, _, _ = preprocess_case({"case_id": "case", "image": img[None], "label": None,
                                 "meta": {"affine": affine, "spacing": [1.0, 1.0, 1.0]}}, plan)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def _run_bundle(bundle: Path, data: Path, out: Path) -> None:
    monai.bundle.run(config_file=str(bundle / "configs" / "inference.json"),
                     meta_file=str(bundle / "configs" / "metadata.json"), logging_file=False,
                     bundle_root=str(bundle), dataset_dir=str(data), output_dir=str(out))


def test_bundle_run_3d_matches_mambaseg_predict(bundles, tmp_path):
    """MONAI's bundle runner on a tiny NIfTI writes the label map mambaseg predict writes (same grid, affine and
    labels); the input's x axis is flipped so orientation and its inverse take part."""
    _, b = bundles
    ckpt, bundle = b["3d"]
    data = tmp_path / "data"
    data.mkdir()
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(_volume(0), affine), data / "case1.nii.gz")
    _run_bundle(bundle, data, tmp_path / "monai")
    predict(ckpt, data, tmp_path / "ours", progress=False)
    a, p = nib.load(tmp_path / "monai" / "case1_seg.nii.gz"), nib.load(tmp_path / "ours" / "case1.nii.gz")
    got, ref = np.asarray(a.dataobj), np.asarray(p.dataobj)
    assert got.shape == ref.shape == (20, 22, 18) and got.dtype == np.uint8
    np.testing.assert_allclose(a.affine, p.affine, atol=1e-5)
    assert set(np.unique(ref)) == {0, 1}  # a non-trivial prediction
    # not bit-exact: the 3D bundle runs MONAI's SlidingWindowInferer (its Gaussian map and accumulation order), so
    # the logits differ from mambaseg's sliding window at float rounding and an untrained network's near-tie voxels
    # can flip (the 2D bundle runs mambaseg's own sliding window and is compared for exact equality)
    assert (got == ref).mean() >= 0.999


def test_bundle_run_2d_matches_mambaseg_predict(bundles, tmp_path):
    """PNG in, 0/255 PNG out, same orientation and pixels as mambaseg predict (non-square image, tiles overlap)."""
    _, b = bundles
    ckpt, bundle = b["2d"]
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    arr = (rng.random((40, 52, 3)) * 255).astype(np.uint8)
    arr[10:25, 5:30] = 200
    Image.fromarray(arr).save(data / "im1.png")
    _run_bundle(bundle, data, tmp_path / "monai")
    predict(ckpt, data, tmp_path / "ours", progress=False)
    got = np.asarray(Image.open(tmp_path / "monai" / "im1_seg.png"))
    ref = np.asarray(Image.open(tmp_path / "ours" / "im1.png"))
    assert got.shape == ref.shape == (40, 52)
    assert set(np.unique(ref)) == {0, 255}
    assert np.array_equal(got, ref)


def test_cli_existing_output_refused_unless_overwrite(bundles, tmp_path, capsys):
    _, b = bundles
    ckpt, _ = b["2d"]
    out = tmp_path / "b"
    assert main(["export", "--model", str(ckpt), "--bundle", str(out)]) == 0
    (out / "stale.txt").write_text("old")
    capsys.readouterr()
    assert main(["export", "--model", str(ckpt), "--bundle", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "--overwrite" in err
    assert (out / "stale.txt").exists()
    assert main(["export", "--model", str(ckpt), "--bundle", str(out), "--overwrite"]) == 0
    # --overwrite replaces what export wrote and nothing else: the user's file stays
    assert (out / "stale.txt").read_text() == "old" and (out / "models" / "model.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    # --overwrite never empties a folder that is not a bundle
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    capsys.readouterr()
    assert main(["export", "--model", str(ckpt), "--bundle", str(other), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err and (other / "keep.txt").exists()
    # --size belongs to --onnx; --onnx and --bundle exclude each other
    assert main(["export", "--model", str(ckpt), "--bundle", str(tmp_path / "c"), "--size", "32", "32"]) == 2
    assert "--size" in capsys.readouterr().err and not (tmp_path / "c").exists()
    with pytest.raises(SystemExit) as e:
        main(["export", "--model", str(ckpt), "--bundle", str(tmp_path / "d"), "--onnx", str(tmp_path / "d.onnx")])
    assert e.value.code == 2


def test_shipped_model_by_name(tmp_path):
    """``--model akmamba_net_drive`` (a shipped fundus model): the bundle's network gives the shipped weights'
    outputs, and its README names what the MONAI pipeline does not reproduce (the field of view)."""
    from mambaseg.resources import ResourceError, shipped_model_path

    try:
        path = shipped_model_path("akmamba_net_drive")
    except ResourceError as e:
        pytest.skip(f"shipped weights not available: {e}")
    out = tmp_path / "ship"
    assert main(["export", "--model", "akmamba_net_drive", "--bundle", str(out)]) == 0
    readme = (out / "docs" / "README.md").read_text()
    assert "Differences from `mambaseg predict`" not in readme and "field of view" in readme
    assert json.loads((out / "configs" / "mambaseg.json").read_text())["data"]["fov_diameter"] > 0
    net = _parser(out).get_parsed_content("network_def")
    net.load_state_dict(torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True))
    ours = model_from_checkpoint(load_checkpoint(path), path).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), ours(x), rtol=1e-5, atol=1e-5)


def test_bundle_resampling_grid_matches_ours(tmp_path):
    """Off the target spacing the bundle's ``Spacingd`` gives mambaseg's preprocessed grid (shape, first voxel
    centre; voxel extents aligned); the cubic values differ a little (MONAI's spline vs scipy zoom)."""
    from scipy import ndimage

    bundle = Path(export_bundle(_ckpt3d(tmp_path / "c.pt"), tmp_path / "b")["path"])
    img = ndimage.gaussian_filter(_volume(0, (16, 24, 26)), 1.5)
    img[img < 40] = 0
    affine = np.diag([-1.5, 1.0, 0.8, 1.0])
    nib.save(nib.Nifti1Image(img, affine), tmp_path / "s.nii.gz")
    got = _parser(bundle).get_parsed_content("preprocessing")({"image": str(tmp_path / "s.nii.gz")})["image"]
    ref, _, props = preprocess_case({"case_id": "s", "image": img[None], "label": None,
                                     "meta": {"affine": affine, "spacing": [1.5, 1.0, 0.8]}}, MR_PLAN)
    assert tuple(got.shape) == ref.shape == (1, *props["shape_resampled"]) and ref.shape[1:] != img.shape
    ours = np.asarray(props["affine_preprocessed"])
    # same first-voxel centre; voxel sizes: MONAI records the target spacing, mambaseg the extent-fitted size
    # (original extent / rounded voxel count), within the rounding of the voxel count
    np.testing.assert_allclose(np.asarray(got.affine)[:3, 3], ours[:3, 3], atol=1e-4)
    np.testing.assert_allclose(np.abs(np.diag(np.asarray(got.affine))[:3]), np.abs(np.diag(ours)[:3]), rtol=0.05)
    assert np.corrcoef(np.asarray(got).ravel(), ref.ravel())[0, 1] > 0.98


def test_bundle_run_3d_channel_files(tmp_path):
    """A 2-modality model reads nnU-Net channel files ``CASE_0000`` / ``CASE_0001`` as one case (stacked as
    channels in that order) and segments it like mambaseg predict."""
    torch.manual_seed(0)
    net = build_model("dm_segnet_tiny", in_channels=2)
    plan = dict(MR_PLAN, modality=["MR", "MR"], normalization=[{"scheme": "zscore_nonzero"}] * 2)
    ckpt = tmp_path / "c.pt"
    save_checkpoint({"model_name": "dm_segnet_tiny", "model_kwargs": {"in_channels": 2},
                     "state_dict": net.state_dict(), "config": {"infer": {"overlap": 0.25}},
                     "data": {"spatial_dims": 3, "plan": plan, "channel_names": ["T1", "T2"]}}, ckpt)
    bundle = Path(export_bundle(ckpt, tmp_path / "b")["path"])
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["channel_def"] == {"0": "T1", "1": "T2"}
    data = tmp_path / "data"
    data.mkdir()
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(_volume(0), affine), data / "case1_0000.nii.gz")
    nib.save(nib.Nifti1Image(_volume(1) * 0.5, affine), data / "case1_0001.nii.gz")
    _run_bundle(bundle, data, tmp_path / "monai")
    predict(ckpt, data, tmp_path / "ours", progress=False)
    got = np.asarray(nib.load(tmp_path / "monai" / "case1_0000_seg.nii.gz").dataobj)
    ref = np.asarray(nib.load(tmp_path / "ours" / "case1.nii.gz").dataobj)
    assert got.shape == ref.shape and set(np.unique(ref)) == {0, 1}
    assert (got == ref).mean() >= 0.999


@pytest.mark.parametrize("scheme", ["zscore_nonzero", "zscore", "none", "rescale_to_0_1", "rgb_to_0_1", "ct",
                                    "ct_window"])
def test_bundle_normalisation_matches_normalize_channels(scheme):
    """Every per-channel scheme maps to MONAI transforms that give normalize_channels' values (float32 round-off)."""
    import monai.transforms as mt

    from mambaseg.apps.bundle import normalization_steps
    from mambaseg.data.plans.normalize import normalize_channels

    rng = np.random.default_rng(3)
    image = rng.uniform(0, 255, (2, 6, 7, 5)).astype(np.float32)
    image[:, :1] = 0  # zeros for the non-zero mask
    entry = {"scheme": scheme}
    if scheme in ("ct", "ct_window"):
        entry.update(lower=20.0, upper=200.0, mean=90.0, std=40.0)
    expected, _ = normalize_channels(image, [entry, entry])
    data = {"image": image.copy()}
    for step in normalization_steps([entry, entry]):
        kwargs = {k: v for k, v in step.items() if k not in ("_target_", "keys")}
        data = getattr(mt, step["_target_"])(keys="image", **kwargs)(data)
    got = np.asarray(data["image"], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_bundle_refuses_mixed_schemes():
    from mambaseg.apps.bundle import normalization_steps

    with pytest.raises(ValueError, match="mixes schemes"):
        normalization_steps([{"scheme": "zscore"}, {"scheme": "none"}])


def _ckpt2d_fov(path: Path, seed: int = 1, threshold: float = 0.5) -> Path:
    """A fundus-style binary model: trained with FOV masks (z-score inside the FOV, predictions zero outside) and a
    training FOV diameter of 40 px, so that 52-px-wide photos are rescaled before the network."""
    torch.manual_seed(seed)
    net = build_model("unet_tiny", in_channels=3, out_channels=1)
    save_checkpoint({"model_name": "unet_tiny", "model_kwargs": {"in_channels": 3, "out_channels": 1},
                     "state_dict": net.state_dict(),
                     "config": {"data": {"patch_size": TILE_2D, "fov": True},
                                "infer": {"overlap": 0.25, "threshold": threshold}},
                     "data": {"spatial_dims": 2, "fov_diameter": 40.0}}, path)
    return path


def _fundus(seed: int, h: int = 50, w: int = 58) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (min(h, w) / 2 - 2) ** 2
    arr = (rng.random((h, w, 3)) * 120 + 60).astype(np.uint8)
    arr[10:30, 20:24] = 230  # a bright "vessel"
    arr[~fov] = 0  # black outside the field of view, as fundus photos
    return arr


def test_bundle_run_2d_fov_tif_identical_to_predict(tmp_path):
    """A FOV model on DRIVE-like .tif photos: the bundle estimates the FOV, z-scores inside it, rescales to the
    training FOV diameter, thresholds and masks exactly as ``mambaseg predict``: identical masks, pixel for pixel.
    Formerly the bundle read no .tif (a folder of them gave no output) and left out the FOV steps."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        Image.fromarray(_fundus(i)).save(data / f"{i + 1:02d}_test.tif")
    # an untrained network's probabilities sit on one side of 0.5: threshold at their median inside the FOV, so
    # that the masks to compare are mixed
    predict(_ckpt2d_fov(tmp_path / "probe.pt"), data, tmp_path / "probe", progress=False, probs=True)
    fg = np.asarray(Image.open(tmp_path / "probe" / "probs" / "01_test.png")).astype(np.float64) / 65535
    ckpt = _ckpt2d_fov(tmp_path / "fov.pt", threshold=float(np.median(fg[fg > 0])))
    bundle = Path(export_bundle(ckpt, tmp_path / "b")["path"])
    _run_bundle(bundle, data, tmp_path / "monai")
    predict(ckpt, data, tmp_path / "ours", progress=False)
    for i in range(2):
        got = np.asarray(Image.open(tmp_path / "monai" / f"{i + 1:02d}_test_seg.png"))
        ref = np.asarray(Image.open(tmp_path / "ours" / f"{i + 1:02d}_test.png"))
        assert got.shape == ref.shape == (50, 58)
        assert set(np.unique(ref)) == {0, 255} and ref[0, 0] == 0  # mixed, and zero outside the FOV
        assert np.array_equal(got, ref)


@pytest.mark.parametrize("kind,needle", [("2d", ".tif"), ("3d", ".nii.gz")])
def test_bundle_empty_folder_is_an_error(bundles, tmp_path, kind, needle):
    """No input file in the folder: an error naming it (and the formats), not a silent run writing nothing."""
    _, b = bundles
    _, bundle = b[kind]
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("x")
    with pytest.raises(Exception) as info:
        _run_bundle(bundle, data, tmp_path / "monai")
    chain, e = [], info.value
    while e is not None:  # MONAI wraps the component's error in its own ("Failed to instantiate ...")
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(x, DataError) and str(data) in str(x) and needle in str(x) for x in chain), chain
    assert not (tmp_path / "monai").exists()


@pytest.mark.parametrize("kind", ["3d", "2d"])
def test_verify_metadata_offline(bundles, kind):
    """``monai.bundle verify_metadata`` accepts the metadata against the shipped schema, with no download (the
    schema file is in the bundle); a metadata file without a mandatory key is refused."""
    pytest.importorskip("jsonschema")
    from monai.bundle import verify_metadata

    _, b = bundles
    bundle = b[kind][1]
    schema = bundle / "configs" / "metadata_schema.json"
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]["inputs"]["image"]["num_channels"]
    bad = bundle.parent / f"bad_{kind}.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="num_channels"):
        verify_metadata(meta_file=str(bad), filepath=str(schema))


def test_ckpt_export_command_of_the_readme(bundles, tmp_path):
    """The TorchScript export the README gives (traced at the inference tile) works and gives the network's
    outputs."""
    from monai.bundle import ckpt_export

    _, b = bundles
    ckpt, bundle = b["2d"]
    readme = (bundle / "docs" / "README.md").read_text()
    assert "--use_trace True --input_shape \"[1, 3, 32, 32]\"" in readme
    ts = tmp_path / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts), ckpt_file=str(bundle / "models" / "model.pt"),
                meta_file=str(bundle / "configs" / "metadata.json"),
                config_file=str(bundle / "configs" / "inference.json"), use_trace=True, input_shape=[1, 3, 32, 32])
    net = torch.jit.load(str(ts))
    ours = model_from_checkpoint(load_checkpoint(ckpt), ckpt).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(net(x), ours(x), rtol=1e-5, atol=1e-5)
