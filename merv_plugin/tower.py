"""``MERVVisionTower``: several frozen video encoders, each read from its own folder, behind one tower.

The tower is a folder whose ``config.json`` lists the encoders (``--vision_tower`` points at it;
``model_type: merv_tower`` selects this tower without ``--mm_vision_tower_type``)::

    {"model_type": "merv_tower", "num_frames": 16,
     "encoders": [{"name": "languagebind", "kind": "clip_frames", "path": "languagebind"},
                  {"name": "dinov2", "kind": "dinov2", "path": "dinov2", "image_size": 224},
                  {"name": "vivit", "kind": "vivit", "path": "vivit", "frame_rate": 2},
                  {"name": "siglip", "kind": "siglip", "path": "siglip"}]}

(``path`` relative to the tower folder, or absolute; the other fields: :class:`EncoderSpec`). Every
encoder yields one temporal slot per LLM frame (``frame_rate`` = tubelet depth), so all agree on ``t``;
ViViT runs on consecutive windows of its checkpoint's ``num_frames``.

``encode_batch`` runs each encoder once over every frame (every window) of the micro-batch — on a GPU
each encoder on its own CUDA stream (``parallel_streams``), on a CPU one after another (MERV itself loops
over the encoders on one stream) — and fills ``VisualBatch.encoders`` with each encoder's ``(sum t_i, h_e, w_e, D_e)``
features; ``features`` is the first encoder's. The first encoder also serves token-wise projectors
(``__call__``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn

from llava.model.visual import EncoderFeatures, VisualBatch
from llava.model.weights import read_json

from .encoders import KINDS, EncoderSpec, EncoderTrunk, read_encoder_config
from .processor import MERVProcessor

logger = logging.getLogger(__name__)

MODEL_TYPE = "merv_tower"


def read_tower_config(folder: str | Path) -> dict:
    """The tower folder's ``config.json`` with every encoder's HF vision config filled in.

    A folder holding one encoder's checkpoint (a SigLIP folder, say) is a one-encoder tower (MERV's
    single-encoder baselines) whose clips keep the decoded frame count.
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"MERV tower folder {folder}: no config.json (it lists the encoders; see "
                                f"merv_plugin/README.md)")
    raw = read_json(config_file)
    if raw.get("model_type") != MODEL_TYPE:
        kind = next((name for name, k in KINDS.items() if raw.get("model_type") in k.model_types), None)
        if kind is None:
            raise ValueError(f"{config_file}: model_type {raw.get('model_type')!r} is neither {MODEL_TYPE!r} nor an "
                             f"encoder the MERV tower reads ({sorted(t for k in KINDS.values() for t in k.model_types)})")
        raw = {"model_type": MODEL_TYPE, "num_frames": None, "encoders": [{"name": kind, "kind": kind, "path": "."}]}
    entries = raw.get("encoders")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{config_file}: 'encoders' must be a non-empty list")
    specs = []
    for entry in entries:
        spec = EncoderSpec.from_dict(entry, str(config_file))
        specs.append(EncoderSpec.from_dict(dict(spec.to_dict(), config=read_encoder_config(spec, folder / spec.path)),
                                           str(config_file)).to_dict())
    return {"model_type": MODEL_TYPE, "num_frames": raw.get("num_frames"), "encoders": specs}


class MERVVisionTower(nn.Module):
    """Frozen encoders ``encoders.<name>.model.*`` (module docstring).

    Args:
        vision_tower: the tower folder.
        vision_tower_cfg: the LLaVA config (``mm_vision_tower_config`` rebuilds the tower without the
            folders when ``delay_load``).
        delay_load: structure only; the weights come from a LLaVA checkpoint.
        keep_head: unsupported (no encoder here has a joint image-text space).
    """

    def __init__(self, vision_tower: str, vision_tower_cfg=None, delay_load: bool = False, keep_head: bool = False):
        super().__init__()
        if keep_head:
            raise ValueError("the MERV tower has no dense image-text embeddings (keep_head); pick a projector "
                             "that does not ask for them")
        self.vision_tower_name = str(vision_tower)
        self.keep_head = False
        self.parallel_streams = True  # GPU: one CUDA stream per encoder (benchmarks/merv_forward.py compares)
        stored = getattr(vision_tower_cfg, "mm_vision_tower_config", None)
        folder = Path(vision_tower)
        if stored is None or stored.get("model_type") != MODEL_TYPE or (not delay_load and folder.is_dir()):
            full = read_tower_config(folder)
        else:
            full = dict(stored)
        self.full_config = full
        self.specs = [EncoderSpec.from_dict(e, "mm_vision_tower_config") for e in full["encoders"]]
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"MERV tower {folder}: encoder names must be unique, got {names}")
        self.encoders = nn.ModuleDict({s.name: EncoderTrunk(s) for s in self.specs})
        windows = {name: t.window for name, t in self.encoders.items() if t.window > 1}
        multiple = math.lcm(1, *(w // math.gcd(w, self.encoders[name].spec.frame_rate) for name, w in windows.items()))
        self.image_processor = MERVProcessor([t.spec for t in self.encoders.values()], full.get("num_frames"),
                                             multiple, windows)
        self.is_loaded = False
        if not delay_load:
            self.load_model()

    def load_model(self, device_map=None) -> None:
        """Reads every encoder from its folder (strictly; errors name the encoder and the folder)."""
        if self.is_loaded:
            return
        for spec in self.specs:
            path = Path(spec.path)
            folder = path if path.is_absolute() else Path(self.vision_tower_name) / path
            if not folder.is_dir():
                raise FileNotFoundError(f"MERV encoder {spec.name!r}: folder {folder} does not exist")
            self.encoders[spec.name].load(folder)
        self.requires_grad_(False)
        self.is_loaded = True

    # ---- encoding ------------------------------------------------------------------------------

    def _inputs(self, items: list, modalities: list[str]) -> tuple[list[dict[str, torch.Tensor]], list[bool]]:
        """Each item as ``{encoder: pixels}``, and whether it came so (a clip from ``process_clip``); a
        plain tensor (an image, the text-only dummy) holds the primary encoder's pixels, the others'
        are derived here (:meth:`MERVProcessor.from_primary`)."""
        out, clips = [], []
        for index, item in enumerate(items):
            clips.append(isinstance(item, dict))
            if not isinstance(item, dict):
                item = self.image_processor.from_primary(item.to(self.device))
            missing, extra = sorted(set(self.encoders) - set(item)), sorted(set(item) - set(self.encoders))
            if missing or extra:
                raise ValueError(f"MERV tower: visual item {index} ({modalities[index]}) has pixels for {sorted(item)}; "
                                 f"missing {missing}, unexpected {extra}")
            out.append(item)
        return out, clips

    def encode_batch(self, items: list, modalities: list[str]) -> VisualBatch:
        """Every item of a micro-batch -> ``VisualBatch`` whose ``encoders`` hold each encoder's features
        ``(sum_i t_i, h_e, w_e, D_e)``, ``t_i`` the temporal slots of item ``i``: the same for every
        encoder for a clip (an error otherwise); an image gives a windowed encoder a whole window."""
        inputs, clips = self._inputs(items, modalities)
        jobs, slots = {}, {}
        for name, trunk in self.encoders.items():
            pixels = [item[name].to(device=self.device, dtype=self.dtype) for item in inputs]
            for index, p in enumerate(pixels):
                if p.shape[0] % trunk.window:
                    raise ValueError(f"MERV encoder {name!r}: visual item {index} has {p.shape[0]} frames, not a "
                                     f"multiple of its {trunk.window}-frame window")
            frames = torch.cat(pixels)
            if trunk.window > 1:  # a tubelet encoder sees consecutive windows of its own frame count
                frames = frames.view(-1, trunk.window, *frames.shape[1:])
            jobs[name], slots[name] = frames, [p.shape[0] // trunk.tubelet for p in pixels]
        with torch.set_grad_enabled(torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())):
            features = self._run_encoders(jobs)
        encoded = {name: EncoderFeatures(features[name], slots[name]) for name in self.encoders}
        primary = next(iter(encoded))
        for name, enc in encoded.items():
            for index, (t, t0) in enumerate(zip(enc.frames_per_item, encoded[primary].frames_per_item)):
                if clips[index] and t != t0:
                    raise ValueError(f"MERV tower: visual item {index}: encoder {name!r} yields {t} temporal slots but "
                                     f"{primary!r} yields {t0}; the encoders of a clip must agree on t (frame counts "
                                     f"n * frame_rate)")
        return VisualBatch(encoded[primary].features, list(encoded[primary].frames_per_item), list(modalities),
                           encoders=encoded)

    def _run_encoders(self, jobs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each encoder on its input; on a GPU (with ``parallel_streams``) every encoder on its own CUDA
        stream, so their kernels may overlap; elsewhere one after another."""
        if self.device.type != "cuda" or not self.parallel_streams or len(jobs) == 1:
            return {name: self.encoders[name](frames) for name, frames in jobs.items()}
        main = torch.cuda.current_stream(self.device)
        running = {}
        for name, frames in jobs.items():
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(main)  # the inputs were written on the main stream
            with torch.cuda.stream(stream):
                running[name] = (self.encoders[name](frames), stream)
            frames.record_stream(stream)
        for out, stream in running.values():
            main.wait_stream(stream)
            out.record_stream(main)
        return {name: out for name, (out, _) in running.items()}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Token-wise path: ``(N, 3, S, S)`` pixels of the first encoder -> ``(N, h*w, D)``."""
        trunk = next(iter(self.encoders.values()))
        return trunk(images.to(self.dtype)).flatten(1, 2)

    # ---- the tower interface ---------------------------------------------------------------------

    @property
    def primary(self) -> EncoderTrunk:
        return next(iter(self.encoders.values()))

    @property
    def config(self):
        return self.primary.model.config

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def hidden_size(self) -> int:
        return self.primary.hidden_size

    @property
    def num_patches_per_side(self) -> int:
        return self.primary.grid
