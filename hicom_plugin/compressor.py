"""``HIComCompressor``: local + global branches over a packed micro-batch, one token list per item.

Output of item i: its local tokens, row-major over ``(t', h', w')``, then its global tokens:
``ceil(T/aT) * ceil(H/aH) * ceil(W/aW) + N`` rows (680 for 32 SigLIP frames, 113 for an image).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from hicom_plugin.config import MODALITIES, HIComConfig
from hicom_plugin.global_compressor import GlobalCompressor
from hicom_plugin.injection import GuideInjector, check_text_tokens
from hicom_plugin.local_compressor import LocalCompressor


class HIComCompressor(nn.Module):
    """The HICom projector math, with no tie to a tower, tokenizer or LLM.

    Args:
        cfg: all options (:class:`HIComConfig`).
        vision_dim: width ``d`` of the tower features (and of the dense embeddings).
        text_dim: width of the instruction embeddings.
        llm_dim: width ``D`` of the output tokens.

    Submodules: ``local_compressor`` (:class:`LocalCompressor` or None) and ``global_compressor``
    (:class:`GlobalCompressor` or None).
    """

    def __init__(self, cfg: HIComConfig, vision_dim: int, text_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.config = cfg
        self.vision_dim, self.text_dim, self.llm_dim = vision_dim, text_dim, llm_dim
        self.local_compressor = LocalCompressor(cfg, vision_dim, text_dim, llm_dim) if cfg.has_local else None
        self.global_compressor = GlobalCompressor(cfg, vision_dim, text_dim, llm_dim) if cfg.has_global else None
        self.last_attention: dict[str, torch.Tensor] | None = None

    # ---- what the caller must provide ----------------------------------------------------------
    @property
    def needs_dense_embeds(self) -> bool:
        return self.config.needs_dense_embeds

    @property
    def needs_text_pooled(self) -> bool:
        return self.config.needs_text_pooled

    @property
    def needs_text_tokens(self) -> bool:
        return self.config.needs_text_tokens

    def num_output_tokens(self, t: int, h: int, w: int, modality: str = "video") -> int:
        """Rows returned for one item of ``t`` frames on an ``h x w`` grid."""
        return self.config.num_output_tokens(t, h, w, modality)

    def record_attention(self, enabled: bool = True) -> None:
        """Switches ``return_attention`` on a built (e.g. loaded) compressor and its branches; the
        maps of the next forward are then in ``last_attention``."""
        self.config = self.config.replace(return_attention=bool(enabled))
        for branch in (self.local_compressor, self.global_compressor):
            if branch is not None:
                branch.cfg = self.config
        if not enabled:
            self.last_attention = None

    @property
    def fold_attention(self) -> bool:
        """Whether the global branch runs its folded form (default) or the textbook one.

        Both give the same outputs and gradients (``tests/hicom_plugin/test_compressor.py``); the
        textbook form projects every key and value and exists to check the fold and to benchmark it.
        """
        return self.global_compressor is None or self.global_compressor.fold_attention

    @fold_attention.setter
    def fold_attention(self, value: bool) -> None:
        if self.global_compressor is not None:
            self.global_compressor.fold_attention = bool(value)

    # ---- parameter groups ----------------------------------------------------------------------
    def named_injector_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters of the instruction injectors (their own learning-rate group in stage 2).

        Empty for direct injection without ``direct_mlp``/``adapt_g`` when text and vision widths
        agree (the release setting): there is then nothing to train in the injectors.
        """
        for prefix, module in self.named_modules():
            if isinstance(module, GuideInjector):
                for name, param in module.named_parameters():
                    yield f"{prefix}.{name}", param

    def injector_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_injector_parameters()]

    # ---- forward -------------------------------------------------------------------------------
    def _check_inputs(self, features, frames_per_item, modalities, dense_embeds, text_pooled,
                      text_tokens, text_mask) -> None:
        if features.ndim != 4 or features.shape[-1] != self.vision_dim:
            raise ValueError(
                f"HIComCompressor: features must be (sum T_i, H, W, {self.vision_dim}), got {tuple(features.shape)}"
            )
        if len(frames_per_item) != len(modalities) or not frames_per_item:
            raise ValueError(
                f"HIComCompressor: {len(frames_per_item)} items in frames_per_item but {len(modalities)} modalities"
            )
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in frames_per_item):
            raise ValueError(f"HIComCompressor: frames_per_item={frames_per_item} must be integers >= 1")
        if sum(frames_per_item) != features.shape[0]:
            raise ValueError(
                f"HIComCompressor: frames_per_item sums to {sum(frames_per_item)} but features hold "
                f"{features.shape[0]} frames"
            )
        bad = sorted({m for m in modalities if m not in MODALITIES})
        if bad:
            raise ValueError(f"HIComCompressor: unknown modalities {bad}; expected one of {MODALITIES}")
        if dense_embeds is not None and dense_embeds.shape != features.shape:
            raise ValueError(
                f"HIComCompressor: dense_embeds {tuple(dense_embeds.shape)} must match features {tuple(features.shape)}"
            )
        n = len(frames_per_item)
        if self.needs_text_pooled and (text_pooled is None or text_pooled.shape != (n, self.text_dim)):
            got = None if text_pooled is None else tuple(text_pooled.shape)
            raise ValueError(f"HIComCompressor: text_pooled must be ({n}, {self.text_dim}), got {got}")
        if self.needs_text_tokens:
            check_text_tokens(text_tokens, text_mask, n, self.text_dim, "HIComCompressor")

    def forward(
        self,
        features: torch.Tensor,
        frames_per_item: list[int],
        modalities: list[str],
        dense_embeds: torch.Tensor | None = None,
        text_pooled: torch.Tensor | None = None,
        text_tokens: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Compresses all visual items of a micro-batch at once.

        Args:
            features: ``(sum_i T_i, H, W, vision_dim)`` packed along frames like ``VisualBatch``.
            frames_per_item: ``T_i`` per item.
            modalities: ``"image" | "video" | "text"`` per item; images, text dummies and 1-frame
                items use ``alpha_T = 1``.
            dense_embeds: same shape as ``features``; required when ``needs_dense_embeds``.
            text_pooled: ``(N_items, text_dim)``, required when ``needs_text_pooled``.
            text_tokens: ``(N_items, L, text_dim)``, required when ``needs_text_tokens``.
            text_mask: ``(N_items, L)`` bool, True = real token (used by fine injection with
                ``fine_pad_mask``); None = every token is real.

        Returns:
            One ``(L_i, llm_dim)`` tensor per item: local tokens then global tokens.
            With ``config.return_attention``, ``self.last_attention`` is a dict with the keys
            ``"local"`` ``(B, G, M)``, ``"local_valid"`` ``(B, G, M)``, ``"local_coords"``
            ``(B, G, M, 3)`` (see :meth:`LocalCompressor.forward`), ``"global"``
            ``(B, heads, N, T_max*H*W)`` and ``"global_valid"`` ``(B, T_max*H*W)``, for the branches
            that exist.
        """
        self._check_inputs(features, frames_per_item, modalities, dense_embeds, text_pooled,
                           text_tokens, text_mask)
        cfg = self.config
        _, height, width, _ = features.shape
        tokens, valid = [], []
        attention: dict[str, torch.Tensor] = {}
        if self.local_compressor is not None:
            kernels = [cfg.temporal_kernel(t, m) for t, m in zip(frames_per_item, modalities)]
            local, local_valid = self.local_compressor(
                features, frames_per_item, kernels, dense_embeds, text_pooled, text_tokens, text_mask
            )
            tokens.append(local)
            valid.append(local_valid)
            if cfg.return_attention:
                att = self.local_compressor.last_attention
                attention.update(local=att["weights"], local_valid=att["valid"], local_coords=att["coords"])
        if self.global_compressor is not None:
            glob = self.global_compressor(features, frames_per_item, text_pooled, text_tokens, text_mask)
            tokens.append(glob)
            valid.append(torch.ones(glob.shape[:2], dtype=torch.bool, device=glob.device))
            if cfg.return_attention:
                att = self.global_compressor.last_attention
                attention.update({"global": att["weights"], "global_valid": att["valid"]})
        self.last_attention = attention if cfg.return_attention else None
        lengths = [self.num_output_tokens(t, height, width, m) for t, m in zip(frames_per_item, modalities)]
        packed = torch.cat(tokens, dim=1)[torch.cat(valid, dim=1)]  # item by item: local, then global
        return list(packed.split(lengths))
