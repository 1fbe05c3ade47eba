"""compress → export → eval → bench through the CLI, on the digits model."""

import json
import subprocess
import sys

import pytest

from deploykit.cli.main import main


def run(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


def test_compress_export_eval_bench(workdir, capsys, digits_model):
    art, rep = workdir / "art", workdir / "compress.json"
    code, out, err = run(["compress", "digits:demo", "--data", "digits", "--target-macs", "0.5", "--criterion", "fisher",
                          "--finetune-epochs", "1", "--round-to", "8", "--out", art, "--json", rep], capsys)
    assert code == 0, err
    report = json.loads(rep.read_text())
    for side in ("base", "pruned"):
        assert {"params", "macs", "activation_bytes", "top1"} <= set(report[side])
    assert report["pruned"]["macs"] <= 0.5 * report["base"]["macs"]
    assert report["criterion"] == "fisher" and report["seconds"] > 0
    # Where the time went: every phase of this run, together no more than the whole.
    t = report["timings"]
    assert {"build model", "trace graph", "check groups", "prune and fine-tune", "evaluate", "verify plan"} <= set(t)
    assert t["prune and fine-tune"] > 0 and sum(t.values()) <= report["seconds"]
    assert report["pruned"]["top1"] > 90.0  # digits stay easy at half the MACs after a short fine-tune
    assert "calibrating" in err and "fine-tuning" in err  # progress bars on stderr

    onnx_file, exp = workdir / "pruned.onnx", workdir / "export.json"
    code, out, err = run(["export", art, "--onnx", onnx_file, "--data", "digits", "--json", exp], capsys)
    assert code == 0, err
    e = json.loads(exp.read_text())
    assert e["opset"] == 17 and e["max_rel_diff"] <= 1e-4 and e["onnx"] == str(onnx_file)

    for target in (art, onnx_file):
        ev = workdir / "eval.json"
        code, out, err = run(["eval", target, "--data", "digits", "--json", ev], capsys)
        assert code == 0, err
        res = json.loads(ev.read_text())
        assert res["n"] == 360 and res["top1"] == pytest.approx(report["pruned"]["top1"], abs=0.3)

    code, _, err = run(["export", "digits:demo", "--onnx", workdir / "base.onnx"], capsys)
    assert code == 0, err
    bj = workdir / "bench.json"
    code, out, err = run(["bench", workdir / "base.onnx", "--vs", onnx_file, "--batch", "1,4", "--runs", "20",
                          "--warmup", "2", "--threads", "1", "--json", bj], capsys)
    assert code == 0, err
    b = json.loads(bj.read_text())
    assert len(b["results"]) == 4
    assert {"model", "batch", "p50_ms", "p90_ms", "p99_ms", "throughput"} <= set(b["results"][0])
    assert all(r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] for r in b["results"])
    assert set(b["ratio_p50"]) == {"1", "4"} and all(v > 0 for v in b["ratio_p50"].values())


def test_inspect_json(tmp_path, capsys):
    j = tmp_path / "i.json"
    code, out, err = run(["inspect", "cifar:resnet20", "--json", j], capsys)
    assert code == 0, err
    r = json.loads(j.read_text())
    assert r["macs"] == 40_551_040 and r["params"] == 269_722
    assert {"layers", "channels", "prunable", "reason"} <= set(r["groups"][0])
    assert "layer1.0.conv1" in out


@pytest.mark.parametrize("cmd", ["inspect", "compress", "export", "bench", "eval", "demo"])
def test_every_subcommand_has_help_with_an_example(cmd, capsys):
    code, out, _ = run([cmd, "--help"], capsys)
    assert code == 0
    assert f"Example: deploykit {cmd}" in " ".join(out.split())


def test_module_entry_point_and_console_script():
    r = subprocess.run([sys.executable, "-m", "deploykit", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "compress" in r.stdout
