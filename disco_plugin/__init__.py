"""DisCo (ICCV 2025, arXiv 2507.10302) as a plugin of the LLaVA-OneVision-compatible core.

``DiscoConfig`` holds every option (``PRESETS``: the authors' prototype and a toy size);
``DiscoResampler`` turns each visual item into K tokens with observable per-frame focus maps;
``vcd_loss`` / ``tfc_loss`` are the two training losses; ``DiscoProjector`` is ``mm_projector_type: disco``.
"""

from disco_plugin.config import PRESETS, DiscoConfig, resolve_disco_config
from disco_plugin.losses import tfc_loss, vcd_loss
from disco_plugin.resampler import DiscoResampler

__all__ = ["PRESETS", "DiscoConfig", "DiscoResampler", "resolve_disco_config", "tfc_loss", "vcd_loss"]
