"""HICom (CVPR 2025) video token compression as pure PyTorch modules.

``HIComConfig`` holds every option; ``PRESETS`` has the paper's and the release's settings;
``parse_release_projector_type`` reads the release's ``mm_projector_type`` strings;
``HIComCompressor`` is the compressor itself.
"""

from hicom_plugin.compressor import HIComCompressor
from hicom_plugin.config import (
    PRESETS,
    HIComConfig,
    num_attention_heads,
    parse_release_projector_type,
    resolve_hicom_config,
)

__all__ = [
    "PRESETS",
    "HIComCompressor",
    "HIComConfig",
    "num_attention_heads",
    "parse_release_projector_type",
    "resolve_hicom_config",
]
