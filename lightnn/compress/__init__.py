"""Compression (``lightnn.compress``): Deep Compression (magnitude pruning, trained weight sharing, Huffman coding
into a ``.lnz`` file) and, from sibling modules, structured channel pruning and low-rank factorization.

``load(path)`` decodes a ``.lnz`` file back into its model (``lightnn.checkpoint.load_any`` dispatches to it).
"""

from .channel import ChannelGroup, build_dependency_graph, prune_channels, verify_shrink  # structured pruning
from .depth import block_sensitivity, rank_blocks, remove_blocks, removable_blocks  # depth pruning
from .deep import DeepConfig, deep_compress, evaluate, finetune, report_markdown, round_others_to_half, size_breakdown
from .fileformat import load, read_lnz, save_lnz
from .huffman import canonical_codes, code_lengths
from .prune import MagnitudePruner, agp_sparsity, apply_masks, layer_density, magnitude_masks, prunable_layers
from .share import SharedWeight, centroid_parameters, finalize_sharing, kmeans_1d, share_weights

__all__ = [
    "load", "save_lnz", "read_lnz",
    "ChannelGroup", "build_dependency_graph", "prune_channels", "verify_shrink",
    "removable_blocks", "block_sensitivity", "rank_blocks", "remove_blocks",
    "DeepConfig", "deep_compress", "evaluate", "finetune", "report_markdown", "size_breakdown", "round_others_to_half",
    "MagnitudePruner", "magnitude_masks", "apply_masks", "agp_sparsity", "layer_density", "prunable_layers",
    "share_weights", "finalize_sharing", "centroid_parameters", "kmeans_1d", "SharedWeight",
    "code_lengths", "canonical_codes",
]
