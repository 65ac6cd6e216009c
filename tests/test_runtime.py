"""The CUDA branches of device resolution, environment facts and deterministic mode, tested on
the CPU (with CUDA faked where only torch's answer matters); the CUDA runs are `gpu` tests."""

from __future__ import annotations

import os

import pytest
import torch

from spherelab.runtime import CUBLAS_WORKSPACE, deterministic_mode, environment, resolve_device


def test_auto_means_cuda_where_there_is_one_and_the_cpu_elsewhere(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_asking_for_cuda_without_one_names_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda:0' but CUDA is not available here"):
        resolve_device("cuda:0")
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")


def test_the_environment_of_a_cuda_run_names_its_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"Fake GPU on {device}")
    info = environment(torch.device("cuda", 0))
    assert info["device"] == "cuda:0" and info["device_name"] == "Fake GPU on cuda:0"
    assert environment(torch.device("cpu"))["device"] == "cpu"


def test_deterministic_mode_sets_the_cuda_switches_and_puts_cudnn_back(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", True)
    monkeypatch.setattr(cudnn, "deterministic", False)
    with deterministic_mode(True):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        assert (cudnn.benchmark, cudnn.deterministic) == (False, True)
    assert (cudnn.benchmark, cudnn.deterministic) == (True, False)
