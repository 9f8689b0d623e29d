# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""The border-weighted BCE: narrow gaps between touching cells weigh more, and the config override builds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from scripts.errors import BundleInputError
from scripts.losses import BorderWeightedBCELoss, narrow_gaps


def two_cells(gap: int, size: int = 32) -> np.ndarray:
    """A (size, size) membrane map: a frame of membrane and a vertical membrane ``gap`` pixels wide in the middle."""
    membrane = np.zeros((size, size), dtype=np.float32)
    membrane[[0, -1], :] = membrane[:, [0, -1]] = 1
    membrane[:, size // 2 : size // 2 + gap] = 1
    return membrane


def test_only_gaps_between_two_cells_count():
    thin, wide = narrow_gaps(two_cells(gap=2), radius=3), narrow_gaps(two_cells(gap=12), radius=3)
    assert thin[5:-5, 16:18].all()  # the thin wall between the two cells
    assert not thin[5:-5, 2:8].any()  # deep inside the left cell
    assert not wide[5:-5, 20:24].any()  # the middle of a wall wider than the neighbourhood
    one_cell = np.zeros((16, 16), dtype=np.float32)
    one_cell[0] = 1
    assert not narrow_gaps(one_cell, radius=3).any()


def test_loss_weights_the_gap_more_than_plain_bce():
    target = torch.from_numpy(two_cells(gap=2))[None, None]
    logits = torch.full_like(target, -2.0)  # everything predicted as cell: the membrane pixels are wrong
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    weighted = BorderWeightedBCELoss(radius=3, border_weight=5.0)(logits, target)
    assert weighted > plain * 1.2
    assert torch.isclose(BorderWeightedBCELoss(border_weight=0.0)(logits, target), plain)
    logits.requires_grad_(True)
    BorderWeightedBCELoss()(logits, target).backward()
    assert torch.isfinite(logits.grad).all()


def test_bad_settings_and_shapes_are_named():
    with pytest.raises(BundleInputError, match="radius"):
        BorderWeightedBCELoss(radius=0)
    with pytest.raises(BundleInputError, match="border_weight"):
        BorderWeightedBCELoss(border_weight=-1)
    with pytest.raises(ValueError, match=r"\(B, 1, \*S\)"):
        BorderWeightedBCELoss()(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))


def test_override_file_sets_the_training_loss():
    parser = ConfigParser()
    parser.read_config(["configs/train.json", "configs/loss_border.json"])
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, BorderWeightedBCELoss) and loss.radius == 3 and loss.border_weight == 5.0
