"""The learning-rate scaling rule and SyncBatchNorm switches of the trainer."""

import logging

import pytest
import torch

from pyspk.train.optim import lr_scale
from pyspk.train.trainer import sync_batchnorm


def test_lr_scales_linearly_with_the_global_batch():
    assert lr_scale({"lr": 0.2}, 512) == 1.0  # no reference batch: optim.lr as written
    assert lr_scale({"lr": 0.2, "lr_reference_batch": 512}, 512) == 1.0
    assert lr_scale({"lr": 0.2, "lr_reference_batch": 512}, 64) == pytest.approx(0.125)  # one GPU of 8
    assert lr_scale({"lr": 0.2, "lr_reference_batch": 256}, 1024) == pytest.approx(4.0)


def test_sync_batchnorm_converts_on_cuda_only(caplog):
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    with caplog.at_level(logging.WARNING):
        assert sync_batchnorm(net, torch.device("cpu")) is net
    assert "needs CUDA" in caplog.text and isinstance(net[1], torch.nn.BatchNorm1d)
    weight = net[1].weight
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)  # what the CUDA path returns
    assert isinstance(converted[1], torch.nn.SyncBatchNorm) and converted[1].weight is weight  # optimiser keeps it
