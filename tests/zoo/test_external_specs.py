"""``timm:`` and ``ultralytics:`` specs: preprocessing, task, options, the pickle opt-in, missing extras."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deploykit.errors import DeployKitError
from deploykit.zoo import build_model, check_spec

pytest.importorskip("timm")
# find_spec, not importorskip: a direct first import of ultralytics patches PIL.Image.open for the whole session
# (an unreadable image then tries to pip-install a HEIF plugin); deploykit imports it through import_ultralytics.
if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("the yolo extra (ultralytics) is not installed", allow_module_level=True)


def test_timm_spec_takes_timm_data_config():
    built = build_model("timm:resnet18,num_classes=10")
    assert built.input_shape == (1, 3, 224, 224)
    assert built.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))
    with torch.no_grad():
        assert built.model(built.example_input()).shape == (1, 10)
    # a model whose pretrained config says mean 0.5 / std 0.5 (timm's inception normalization)
    assert build_model("timm:inception_v3").preprocess.mean == pytest.approx((0.5, 0.5, 0.5))


def test_timm_unknown_name_is_one_line():
    with pytest.raises(DeployKitError, match="unknown timm model 'resnet19'.*did you mean"):
        build_model("timm:resnet19")
    with pytest.raises(DeployKitError, match="unknown option 'classes'; valid: num_classes"):
        build_model("timm:resnet18,classes=3")


def test_yolo_detector_is_letterboxed_x_over_255_and_exports_its_decoded_head():
    built = build_model("ultralytics:yolov8n.yaml,nc=10", input_shape=(1, 3, 64, 64))
    pre = built.preprocess
    assert built.task == "detection"
    assert (pre.mean, pre.std, pre.scale, pre.resize) == ((0.0,) * 3, (1.0,) * 3, 255.0, "letterbox")
    with torch.no_grad():
        outs = built.traced(built.example_input())
        decoded = built.exported(built.example_input())
    # the graph, per level: 4 * reg_max box-distribution channels, then 10 class logits
    assert [tuple(o.shape) for o in outs] == [(1, 74, 8, 8), (1, 74, 4, 4), (1, 74, 2, 2)]
    # export: the decoded head, cx cy w h + 10 class scores per anchor (8*8 + 4*4 + 2*2)
    assert tuple(decoded.shape) == (1, 14, 84)
    # the graph and export share the detector's modules (pruning one prunes the other)
    assert built.traced.model is built.model.model is built.exported.net.model


def test_yolo_classifier_gives_logits():
    built = build_model("ultralytics:yolov8n-cls.yaml", input_shape=(1, 3, 64, 64))
    assert built.task == "classification"
    with torch.no_grad():
        assert built.model(built.example_input()).shape == (1, 1000)


def test_letterbox_keeps_aspect_ratio_and_pads_gray():
    from deploykit.zoo.base import Preprocess

    pre = Preprocess(size=(8, 8), mean=(0.0,) * 3, std=(1.0,) * 3, resize="letterbox")
    img = torch.full((1, 4, 8, 3), 255, dtype=torch.uint8)  # 4 high, 8 wide
    x = pre.apply(img)
    assert x.shape == (1, 3, 8, 8)
    assert torch.all(x[:, :, 2:6] == 1.0) and torch.allclose(x[:, :, :2], torch.tensor(114 / 255))


def test_options_are_part_of_a_plan_spec_but_paths_are_not():
    assert check_spec("ultralytics:yolov8n.yaml,nc=10")
    for bad in ("ultralytics:../x.pt", "ultralytics:/tmp/best.pt", "timm:resnet18,nc=1/2"):
        with pytest.raises(ValueError):
            check_spec(bad)


def test_a_trained_checkpoint_needs_the_opt_in(tmp_path: Path):
    from deploykit.zoo.yolo import import_ultralytics

    tasks = import_ultralytics()
    net = tasks.DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    ckpt = tmp_path / "best.pt"
    torch.save({"model": net.half(), "ema": None}, ckpt)
    with pytest.raises(DeployKitError, match="a pickle: loading it runs code.*--trust-factory"):
        build_model(f"ultralytics:{ckpt}", input_shape=(1, 3, 64, 64))
    built = build_model(f"ultralytics:{ckpt}", input_shape=(1, 3, 64, 64), trust_factory=True)
    # the artifact records the config that rebuilds the architecture, never the pickle's path
    assert built.spec == "ultralytics:yolov8n.yaml,nc=3"
    assert torch.equal(built.model.model[0].conv.weight, net.model[0].conv.weight.float())


def test_ultralytics_import_is_offline_and_writes_only_into_the_cache(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "XDG_"))}
    env.update(HOME=str(home), DEPLOYKIT_CACHE=str(tmp_path / "cache"))
    code = ("import socket, torch; save = torch.save\n"
            "def no_net(*a, **k): raise AssertionError('network lookup')\n"
            "socket.getaddrinfo = no_net; socket.create_connection = no_net\n"
            "from deploykit.zoo import build_model\n"
            "build_model('ultralytics:yolov8n.yaml', input_shape=(1, 3, 64, 64))\n"
            "assert torch.save is save\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not any(home.rglob("*")), "nothing is written into the user's home"
    assert (tmp_path / "cache" / "ultralytics").is_dir()


@pytest.mark.parametrize("spec,extra", [("timm:resnet18", "timm"), ("ultralytics:yolov8n.yaml", "yolo")])
def test_a_missing_extra_is_one_line_exit_2(tmp_path: Path, spec: str, extra: str):
    blocker = tmp_path / "block"
    blocker.mkdir()
    # a package that fails to import stands in for an uninstalled one
    for name in ("timm", "ultralytics"):
        (blocker / name).mkdir()
        (blocker / name / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "deploykit", "inspect", spec], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'deploykit[{extra}]'" in lines[0]
