# Copyright (c) the FusionNet bundle developers. Licensed under the Apache License, Version 2.0.
"""Blockwise inference of one large zarr volume on a Dask cluster (``configs/inference_dask.json``).

- ``blocks``: cutting a ``(Z, Y, X)`` volume into chunk-aligned blocks, and the ledger of blocks done.
- ``stitching``: unique labels across blocks and cells joined across block faces.
- ``scheduler``: the Dask cluster (``local:N`` or a scheduler address).
- ``volume``: :class:`BlockwiseSegmenter`, the job that runs the blocks on the cluster.
"""

from .blocks import Block, BlockLedger, block_faces, block_shape, plan_blocks
from .scheduler import dask_client, host_threads, local_workers
from .stitching import block_offsets, core_labels, face_matches, merged_labels, relabel
from .volume import BlockwiseSegmenter, InferencePlugin, network_digest, worker_device

__all__ = [
    "Block",
    "BlockLedger",
    "BlockwiseSegmenter",
    "InferencePlugin",
    "block_faces",
    "block_offsets",
    "block_shape",
    "core_labels",
    "dask_client",
    "face_matches",
    "host_threads",
    "local_workers",
    "merged_labels",
    "network_digest",
    "plan_blocks",
    "relabel",
    "worker_device",
]
