"""Compression (``lightnn.compress``): Deep Compression (magnitude pruning, trained weight sharing, Huffman coding
into a ``.lnz`` file) and, from sibling modules, structured channel pruning and low-rank factorization.
``stages`` holds them as library stages ``stage(model, config, data) -> (model, report)`` (:func:`prune_to_budget`,
:func:`lowrank_stage`, :func:`sensitivity_stage`; Deep Compression's is :func:`deep_compress`).

``load(path)`` decodes a ``.lnz`` file back into its model (``lightnn.checkpoint.load_any`` dispatches to it).
"""

from .channel import ChannelGroup, build_dependency_graph, prune_channels, verify_shrink  # structured pruning
from .depth import block_sensitivity, rank_blocks, remove_blocks, removable_blocks  # depth pruning
from .deep import DeepConfig, deep_compress, evaluate, report_markdown, round_others_to_half, size_breakdown
from .fileformat import load, read_lnz, save_lnz
from .huffman import canonical_codes, code_lengths
from .prune import MagnitudePruner, agp_sparsity, apply_masks, layer_density, magnitude_masks, prunable_layers
from .share import SharedWeight, centroid_parameters, finalize_sharing, kmeans_1d, share_weights
from .budget import BudgetResult, budget_search  # one bisection of a knob under a cost
from .stages import (LowRankConfig, PruneConfig, SensitivityConfig, lowrank_stage, prune_to_budget,  # stages
                     sensitivity_stage)

__all__ = [
    "load", "save_lnz", "read_lnz",
    "ChannelGroup", "build_dependency_graph", "prune_channels", "verify_shrink",
    "removable_blocks", "block_sensitivity", "rank_blocks", "remove_blocks",
    "DeepConfig", "deep_compress", "evaluate", "report_markdown", "size_breakdown", "round_others_to_half",
    "MagnitudePruner", "magnitude_masks", "apply_masks", "agp_sparsity", "layer_density", "prunable_layers",
    "share_weights", "finalize_sharing", "centroid_parameters", "kmeans_1d", "SharedWeight",
    "code_lengths", "canonical_codes",
    "budget_search", "BudgetResult",
    "PruneConfig", "prune_to_budget", "SensitivityConfig", "sensitivity_stage", "LowRankConfig", "lowrank_stage",
]
