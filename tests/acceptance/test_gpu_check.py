"""GPU readiness without a GPU: the device chosen under torchrun, TF32, and benchmarks/gpu_check.py as a
CPU smoke test on the tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from probe_lens.models import loading

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_gpus(monkeypatch):
    """Pretend two CUDA devices are visible; record set_device calls."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(i))
    return calls


def test_default_device_is_the_local_rank_gpu_under_torchrun(fake_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert loading.default_device() == "cuda:1"
    assert fake_gpus == [1]
    monkeypatch.delenv("LOCAL_RANK")
    assert loading.default_device() == "cuda" and fake_gpus == [1]  # one process: no set_device
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(RuntimeError, match="only 2 CUDA device"):
        loading.default_device()
    monkeypatch.setenv("LOCAL_RANK", "one")
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        loading.default_device()


def test_default_device_without_cuda_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert loading.default_device() == "cpu"


def test_tf32_only_for_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda p: calls.append(p))
    loading.enable_tf32("cpu")
    assert calls == []
    loading.enable_tf32("cuda:1")
    loading.enable_tf32(torch.device("cuda"))
    assert calls == ["high", "high"]


EXPECTED_STAGES = {"load", "generate", "collect", "probe_sft", "dpo"}


def test_gpu_check_smoke_on_cpu_tiny(tmp_path):
    """The whole check on the tiny model; the micro-study (minutes on 2 CPU cores) is left out here."""
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--device",
            "cpu",
            "--tiny",
            "--skip-study",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["error"] is None
    assert set(data["stages"]) == EXPECTED_STAGES
    for key in (
        "model",
        "device",
        "torch",
        "bf16_autocast",
        "total_seconds",
        "peak_gpu_mem_gb",
        "peak_rss_gb",
        "dry_run_estimate",
        "dry_run_estimate_note",
    ):
        assert key in data, key
    assert data["device"] == "cpu" and data["peak_gpu_mem_gb"] is None and data["bf16_autocast"] is True
    st = data["stages"]
    assert st["load"]["weights"] == "random-init"
    assert st["generate"]["new_tokens_per_s"] > 0 and st["collect"]["tokens_per_s"] > 0
    for name in ("probe_sft", "dpo"):
        assert st[name]["steps"] == 2 and st[name]["tokens_per_s"] > 0 and st[name]["step_seconds_mean_after_first"] > 0
    assert st["dpo"]["margin_step1"] == 0.0  # policy == reference at step 1


def test_gpu_check_fails_loudly(tmp_path):
    out = tmp_path / "bad.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_check.py"),
            "--device",
            "meta",
            "--tiny",
            "--skip-study",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    data = json.loads(out.read_text())
    assert data["ok"] is False and data["error"]
