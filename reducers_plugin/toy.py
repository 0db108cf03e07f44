"""The training-free reducers' rows of the toy zoo (:mod:`llava.toy.zoo`): each registered reducer on
the reference checkpoint, at the zoo's token budget (its floor where it cannot reach it). The tiny LLM
has 2 decoder layers, so the in-LLM methods prune after layer 1."""

from __future__ import annotations

from llava.plugin import ToyRow

PICTURE = "reducers_plugin.figures:toy_picture"  # (row, model_dir, clips, out) -> PNG


LABELS = {
    "pool2d": "per-frame average pooling", "pool3d": "adaptive (t, h, w) pooling",
    "frame_subsample": "uniform frame subsampling", "random_drop": "random token drop",
    "tome": "ToMe bipartite merging", "vidcom2": "VidCom2 frame-adaptive selection",
    "dycoke_ttm": "DyCoke temporal merging", "visionzip": "VisionZip dominant + contextual",
    "fastvid": "FastVID segments + density merging", "prunevid": "PruneVid static merging + DPC-kNN",
    "fastv": "FastV in-LLM pruning by attention", "dycoke_kv": "DyCoke KV pruning while decoding",
}
OPTIONS = {"fastv": {"layer": 1}, "dycoke_kv": {"layer": 1}}
HEADLINE = ("visionzip", "fastv")


def _row(name: str) -> ToyRow:
    # DyCoke's KV pruning acts while decoding only: its picture (kept tokens before the LLM) has nothing to show
    picture = None if name == "dycoke_kv" else PICTURE
    return ToyRow(name=name, label=f"training-free: {LABELS[name]}", methods=(name,), reducer=name,
                  reducer_options=OPTIONS.get(name, {}), picture=picture, headline=name in HEADLINE)


ROWS = tuple(_row(name) for name in LABELS)
