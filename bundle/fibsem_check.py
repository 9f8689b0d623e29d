# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""``python -m bundle fibsem_check``: scores of inference results on the FIB-SEM medulla cube's held-out block.

Given a ``_prob`` map (and optionally a ``_seg`` of 3D neurons) of sections ``z_start ...`` of
``../shared/data/fibsem_medulla/volume.tif``:

- the map's V_rand / V_info per xy section (the ISBI definition: the best threshold of the map, cells against the
  ground truth's, membranes drawn where the neuron label changes, 2 voxels, as ``bundle.scale_check`` draws them);
- the 3D V_rand / V_info of the neurons in ``_seg`` against the neuron labels (ground-truth 0 left out, predicted 0
  as singletons; ``scripts.evaluation.score_instance_files``' protocol), or of the neurons segmented from the map
  where no ``_seg`` is given: by default as inference.json makes them (``scripts.instances.NEURONS_3D``), or with
  ``--seeds`` ... ``--agglomeration``.

``python -m bundle fibsem_target_ceiling`` scores, instead of a network's map, the training target itself (the
ground truth's membranes grown by ``boundary_dilations``, seen in three planes): the 3D neurons a network that learned
that target perfectly would give, which is how the FIB-SEM target width was chosen.
"""

from __future__ import annotations

import numpy as np
from bundle.fibsem_mix import SHARED, three_plane_target
from bundle.scale_check import fibsem_sections
from scripts.instances import NEURONS_3D


def neuron_labels(z_start: int, z_stop: int) -> np.ndarray:
    """The cube's neuron labels of sections ``z_start .. z_stop - 1``."""
    import tifffile

    return tifffile.imread(SHARED / "fibsem_medulla" / "neuron-labels.tif")[z_start:z_stop]


def fibsem_check(
    prob: str,
    seg: str | None = None,
    z_start: int = 200,
    seeds: str = NEURONS_3D["seeds"],
    seed_threshold: float = NEURONS_3D["seed_threshold"],
    seed_distance: float = NEURONS_3D["seed_distance"],
    min_seed_size: int = 16,
    agglomeration: float = NEURONS_3D["agglomeration"],
) -> dict:
    """The scores of the module docstring, as a dict."""
    from scripts.instances import segment_cells
    from scripts.io import read_stack
    from scripts.isbi_metrics import isbi_scores, rand_info_scores

    probability = read_stack(prob).array.astype(np.float32)
    z_stop = z_start + probability.shape[0]
    _, membranes = fibsem_sections(z_start, z_stop)
    map_scores = isbi_scores(probability, membranes)
    if seg is None:
        options = dict(seeds=seeds, seed_threshold=seed_threshold, seed_distance=seed_distance,
                       min_seed_size=min_seed_size, agglomeration=agglomeration)  # fmt: skip
        neurons = segment_cells(probability, "3d", **options)
    else:
        neurons = read_stack(seg).array
    truth = neuron_labels(z_start, z_stop)
    v_rand, v_info = rand_info_scores(truth, neurons)
    return {
        "sections": [z_start, z_stop],
        "map_v_rand_per_section": round(map_scores["v_rand"], 4),
        "map_v_info_per_section": round(map_scores["v_info"], 4),
        "neurons_v_rand_3d": round(v_rand, 4),
        "neurons_v_info_3d": round(v_info, 4),
        "neurons_true": int(len(np.unique(truth[truth > 0]))),
        "neurons_predicted": int(len(np.unique(neurons[neurons > 0]))),
    }


def target_ceiling(boundary_dilations: int, z_start: int = 200, z_stop: int = 250, blur: float = 1.0) -> dict:
    """3D neuron V_rand / V_info of sections ``z_start .. z_stop - 1`` segmented, with inference.json's settings for
    three-plane volumes (``scripts.instances.NEURONS_3D``), from the three-plane target of their own ground truth
    (:func:`bundle.fibsem_mix.three_plane_target`) blurred by a Gaussian of ``blur`` voxels (a network's map is smooth).
    """
    from scipy import ndimage
    from scripts.instances import NEURONS_3D, segment_cells
    from scripts.isbi_metrics import rand_info_scores

    truth = neuron_labels(z_start, z_stop)
    ideal = ndimage.gaussian_filter(three_plane_target(truth, int(boundary_dilations)), float(blur))
    neurons = segment_cells(ideal, "3d", **NEURONS_3D)
    v_rand, v_info = rand_info_scores(truth, neurons)
    return {
        "sections": [z_start, z_stop],
        "boundary_dilations": int(boundary_dilations),
        "membrane_fraction": round(float((ideal > 0.5).mean()), 4),
        "neurons_v_rand_3d": round(v_rand, 4),
        "neurons_v_info_3d": round(v_info, 4),
    }
