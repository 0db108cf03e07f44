"""Vision projectors: a registry of builders plus the structured-projector contract."""

from .base import EncoderFeatures, ProjectorOutput, StructuredProjector, VisualBatch
from .builder import build_vision_projector, list_projectors, register_projector

__all__ = ["EncoderFeatures", "ProjectorOutput", "StructuredProjector", "VisualBatch", "build_vision_projector",
           "list_projectors", "register_projector"]
