"""Measuring each answer of a video QA run: the counts, times and FLOPs the comparison harness reports.

:class:`MeasuredVideoQA` answers like :class:`~llava.eval.video_infer.VideoQA` and adds a ``measure``
object to every answer line (the per-question artefact that ``llava.eval.compare`` aggregates)::

    {"text_tokens": 92, "input_length": 157, "newline_tokens": 1, "layer_lengths": [157, 113],
     "ttft_s": 0.012, "peak_memory_bytes": null, "device": "cpu (x86_64)",
     "flops": {"tower": ..., "projector": ..., "reducer": ..., "llm_prefill": ...}}

* ``text_tokens``: prompt tokens without the ``<image>`` placeholder; ``input_length``: the LLM's input
  (text + visual); ``newline_tokens``: rows of the input equal to the model's ``image_newline``;
  ``layer_lengths``: the sequence each decoder layer processed in the prompt forward (shorter from
  layer K on under an in-LLM reducer).
* ``ttft_s``: from the call that builds the prompt to the first logits (vision path, reducer and
  prefill included; the device synchronised at both ends); ``peak_memory_bytes``: the device's peak
  allocated memory over the call (CUDA only, else ``null``).
* ``flops``: :func:`llava.eval.flops.visual_flops` (counted after the timed call, so the counting
  does not slow what is timed) and the analytic prefill of the measured layer lengths.

One question at a time (batch 1), one ``<image>`` per prompt, as the video QA commands run.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from llava.mm_utils import pixels_to

from .flops import decoder_prefill_flops, visual_flops
from .video_infer import LoadedModel, VideoQA


class PrefillProbe:
    """Hooks that measure one ``generate`` call: prompt length, newline tokens of the LLM input, the
    sequence length each decoder layer processes in the prompt forward, and the time of the first logits.

    Only the first call of each hooked module is read (the prompt forward); decoding steps are ignored.
    """

    def __init__(self, model):
        self.model = model
        inner = model.get_model()
        self.layers = inner.layers
        self.newline = getattr(inner, "image_newline", None)
        self.device = next(model.parameters()).device
        self.ids_length: int | None = None
        self.input_length: int | None = None
        self.newline_tokens = 0
        self.layer_lengths: list[int | None] = [None] * len(self.layers)
        self.first_logits: float | None = None
        self._handles = []

    def __enter__(self) -> PrefillProbe:
        inner = self.model.get_model()
        self._handles = [
            inner.embed_tokens.register_forward_hook(self._on_ids),
            inner.register_forward_pre_hook(self._on_embeds, with_kwargs=True),
            self.model.get_output_embeddings().register_forward_hook(self._on_logits),
            *(layer.register_forward_hook(self._on_layer(i)) for i, layer in enumerate(self.layers)),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def _on_ids(self, module, args, output) -> None:
        if self.ids_length is None:
            self.ids_length = args[0].shape[-1]

    def _on_embeds(self, module, args, kwargs) -> None:
        embeds = kwargs.get("inputs_embeds")
        if self.input_length is not None or embeds is None:
            return
        if embeds.shape[0] != 1:
            raise ValueError(f"the comparison measures one question at a time, got a batch of {embeds.shape[0]}")
        self.input_length = embeds.shape[1]
        if self.newline is not None:
            self.newline_tokens = int((embeds[0] == self.newline.to(embeds.dtype)).all(dim=-1).sum())

    def _on_layer(self, i: int):
        def hook(module, args, output) -> None:
            if self.layer_lengths[i] is None:
                hidden = output[0] if isinstance(output, tuple) else output
                self.layer_lengths[i] = hidden.shape[1]
        return hook

    def _on_logits(self, module, args, output) -> None:
        if self.first_logits is None:
            _synchronize(self.device)
            self.first_logits = time.perf_counter()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"


class MeasuredVideoQA(VideoQA):
    """:class:`VideoQA` that measures each answer and adds it to the answer line as ``measure``."""

    def __init__(self, loaded: LoadedModel, args: argparse.Namespace):
        super().__init__(loaded, args)
        self._measure: dict | None = None

    def answer(self, prompt: str, instruction: str, pixels: torch.Tensor, qid: str) -> str:
        model = self.loaded.model
        with PrefillProbe(model) as probe:
            device = probe.device
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _synchronize(device)
            start = time.perf_counter()
            text = super().answer(prompt, instruction, pixels, qid)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None  # before counting FLOPs
        if probe.ids_length is None or probe.input_length is None or None in probe.layer_lengths:
            raise RuntimeError(f"question {qid}: the prompt forward was not observed (did generate run the LLM?)")
        flops = visual_flops(model, [pixels_to(pixels, device=device, dtype=model.dtype)], ["video"], [instruction])
        flops["llm_prefill"] = decoder_prefill_flops(model.config, probe.layer_lengths)
        self._measure = {
            "text_tokens": probe.ids_length - 1,  # the one <image> placeholder is replaced
            "input_length": probe.input_length,
            "newline_tokens": probe.newline_tokens,
            "layer_lengths": probe.layer_lengths,
            "ttft_s": probe.first_logits - start,
            "peak_memory_bytes": peak,
            "device": device_name(device),
            "flops": flops,
        }
        return text

    def record_extras(self) -> dict:
        measure, self._measure = self._measure, None
        return {} if measure is None else {"measure": measure}


def sample_counts(measure: dict) -> dict[str, float]:
    """Token counts of one answered question, from its ``measure``: LLM-input visual tokens (newlines
    excluded), newline tokens, and visual tokens averaged over the decoder layers."""
    text, newlines = measure["text_tokens"], measure["newline_tokens"]
    lengths = measure["layer_lengths"]
    return {
        "visual_tokens": measure["input_length"] - text - newlines,
        "newline_tokens": newlines,
        "layer_average_visual_tokens": sum(lengths) / len(lengths) - text - newlines,
    }
