# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The moving average of the weights that training validates and saves (scripts/averaging.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT
from monai.bundle import ConfigParser
from scripts.averaging import WeightAverage
from scripts.errors import BundleInputError
from torch import nn


def _step(average: WeightAverage, network: nn.Module, iteration: int, value: float) -> None:
    """Set every weight and running statistic of ``network`` to ``value`` and run one update."""
    with torch.no_grad():
        for tensor in [*network.parameters(), *(b for b in network.buffers() if b.is_floating_point())]:
            tensor.fill_(value)
        network.bn.num_batches_tracked.fill_(iteration)
    average.update(SimpleNamespace(state=SimpleNamespace(iteration=iteration)))


def test_average_starts_as_a_plain_mean_then_decays() -> None:
    network = nn.Sequential()
    network.add_module("conv", nn.Conv2d(1, 2, 3))
    network.add_module("bn", nn.BatchNorm2d(2))
    average = WeightAverage(network, momentum=0.25)
    for iteration, value in enumerate([4.0, 8.0, 0.0, 12.0], start=1):  # steps 1/1, 1/2, 1/3, then 0.25
        _step(average, network, iteration, value)
    mean_of_three = (4.0 + 8.0 + 0.0) / 3
    expected = 0.75 * mean_of_three + 0.25 * 12.0
    for tensor in [*average.average.parameters(), average.average.bn.running_mean, average.average.bn.running_var]:
        assert torch.allclose(tensor, torch.full_like(tensor, expected))
    assert average.average.bn.num_batches_tracked.item() == 4  # integer buffers are copied
    assert not average.average.training and not any(p.requires_grad for p in average.average.parameters())


def test_momentum_one_follows_the_weights_and_state_round_trips() -> None:
    network = nn.Sequential()
    network.add_module("conv", nn.Conv2d(1, 2, 3))
    network.add_module("bn", nn.BatchNorm2d(2))
    average = WeightAverage(network, momentum=1.0)
    assert average.average is network  # no averaging: no second model to keep in step
    _step(average, network, 1, 3.0)
    _step(average, network, 2, 5.0)
    assert all(torch.equal(a, b) for a, b in zip(average.average.state_dict().values(), network.state_dict().values()))
    restored = WeightAverage(network, momentum=1.0)
    restored.load_state_dict(average.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), average.state_dict().values()))


@pytest.mark.parametrize("momentum", [0, -0.1, 1.5, "0.01", True])
def test_bad_momentum_names_the_key_and_the_fix(momentum: object) -> None:
    with pytest.raises(BundleInputError, match="ema_momentum.*--ema_momentum 0.01"):
        WeightAverage(nn.Linear(1, 1), momentum=momentum)  # type: ignore[arg-type]


def test_train_json_finds_the_average_when_a_handler_is_inserted_first() -> None:
    """MONAI Label puts a CheckpointLoader at the front of train#handlers; the average must stay the average."""
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    parser["features"] = [4, 8, 8, 8, 8]
    parser["device"] = "$torch.device('cpu')"
    handlers = parser["train"]["handlers"]
    parser["train#handlers"] = [{"_target_": "monai.handlers.StatsHandler", "iteration_log": False}, *handlers]
    average = parser.get_parsed_content("weight_average")
    assert isinstance(average, WeightAverage)
    assert parser.get_parsed_content("validate#evaluator#network") is average.average
    assert any(h is average for h in parser.get_parsed_content("train#handlers"))
