"""The contract between the LLaVA architecture and a vision projector.

Two kinds of projector exist:

* **Token-wise projectors** (``linear``, ``mlp2x_gelu``, ``identity``): plain ``nn.Module`` s whose
  ``forward(features)`` maps ``(..., D_vision) -> (..., D_llm)`` token by token. They keep upstream
  LLaVA's checkpoint keys (``model.mm_projector.0.weight`` ...). For videos, the architecture pools
  the projected frames 2x2 afterwards (OneVision), reading the stride and mode from the config at
  every call.

* **Structured projectors** (subclasses of :class:`StructuredProjector`, e.g. a plugin's compressor):
  they see every visual item of the micro-batch at once, with its (T, H, W) layout and, optionally,
  an instruction and plugin fields per item, and return the final LLM tokens of each item (and,
  optionally, named auxiliary losses). The architecture then splices those tokens as they are (no
  pooling, no newline tokens).
"""

from __future__ import annotations

import torch
from torch import nn

from llava.model.visual import MODALITIES, EncoderFeatures, ProjectorOutput, VisualBatch

__all__ = ["MODALITIES", "EncoderFeatures", "ProjectorOutput", "StructuredProjector", "VisualBatch"]


class StructuredProjector(nn.Module):
    """Base class for projectors that compress whole visual items, optionally conditioned on text.

    Subclasses set the two class attributes below and implement :meth:`forward` and
    :meth:`num_output_tokens`, and override :meth:`wants_dense_embeds` if they need the tower's
    dense embeddings. They are built by ``build_vision_projector(config, vision_cfg=...)``
    through the projector registry like any other projector.
    """

    #: The projector uses ``VisualBatch.instructions``; the architecture recovers them from the
    #: prompt when the caller passes none (e.g. lmms-eval, which only passes ``input_ids``).
    uses_instructions: bool = False

    @classmethod
    def wants_dense_embeds(cls, config) -> bool:
        """Whether, for this model config, the projector reads ``VisualBatch.dense_embeds``.

        Asked before the vision tower is built (the tower then keeps its last layers and head).
        """
        return False

    #: Plugin per-sample fields (:class:`llava.plugin.SampleField` names) the projector reads from
    #: ``VisualBatch.fields``; the training data reads these from the annotation records.
    sample_fields: tuple[str, ...] = ()

    #: Names of the auxiliary losses :meth:`forward` returns (each a plugin's
    #: :class:`llava.plugin.AuxLoss`); training writes their weights into ``config.aux_loss_weights``.
    aux_losses: tuple[str, ...] = ()

    def forward(self, batch: VisualBatch) -> list[torch.Tensor] | ProjectorOutput:
        """Returns one ``(L_i, D_llm)`` tensor per item, in item order, or a :class:`ProjectorOutput`
        that adds named auxiliary losses (each declared by a plugin as an ``AuxLoss``)."""
        raise NotImplementedError

    def num_output_tokens(self, t: int, h: int, w: int, modality: str = "video") -> int:
        """Number of LLM tokens produced for one item of ``t`` frames on an ``h x w`` grid."""
        raise NotImplementedError

    def tunable_parts(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter subsets that ``--mm_tunable_parts`` can unfreeze and the trainer can give
        their own learning rate; each name is a :class:`llava.plugin.ParamGroup` its plugin declares
        (which also says whether the part belongs to the adapter). The default has none."""
        return {}

    def adapter_keys_may_be_missing(self, missing: list[str]) -> bool:
        """Whether an adapter file (``--pretrain_mm_mlp_adapter``) lacking ``missing`` (keys relative to
        this module) may still be loaded, those parameters keeping their fresh initialisation; e.g. a
        stage-1 adapter trained without the modules a later stage adds. The default says no."""
        return False

    def clean_instruction(self, text: str) -> str:
        """Turns a user turn recovered from a prompt into the instruction the projector sees.

        The default keeps the text as it is; plugins strip benchmark boilerplate here.
        """
        return text.strip()
