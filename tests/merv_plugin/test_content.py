"""The mixer's weights depend on the content: after a short fit, clips whose answer is carried by
different encoders get weights favouring those encoders (the paper's claim: motion -> ViViT, text ->
SigLIP), while the static ``scalar`` fusion cannot tell them apart."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from llava.model.visual import EncoderFeatures, VisualBatch
from merv_plugin.projector import MERVProjector

WIDTH, DIM = 4, 8


def synthetic_clips(kind: torch.Tensor, generator: torch.Generator) -> tuple[VisualBatch, torch.Tensor]:
    """One-frame, 2x2 clips: the target sits in encoder 0 for ``kind == 0`` ("motion" clips) and in
    encoder 1 for ``kind == 1`` ("text" clips); the other encoder carries noise there. A flag channel
    (+1 / -1 in both encoders) tells the kinds apart."""
    n = kind.shape[0]
    target = torch.randn(n, generator=generator)
    noise = torch.randn(n, generator=generator) * 2
    flag = 1 - 2 * kind.float()
    feats = []
    for encoder in range(2):
        signal = torch.where(kind == encoder, target, noise)
        x = torch.stack([signal, flag, torch.full((n,), float(encoder)), torch.ones(n)], -1)
        feats.append(x[:, None, None, :].expand(n, 2, 2, WIDTH).contiguous())
    encoders = {"motion": EncoderFeatures(feats[0], [1] * n), "text": EncoderFeatures(feats[1], [1] * n)}
    return VisualBatch(feats[0], [1] * n, ["video"] * n, encoders=encoders), target


def fit(fusion: str, steps: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend
    try:
        return _fit(fusion, steps)
    finally:
        torch.set_num_threads(threads)


def _fit(fusion: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    encoders = [{"name": name, "config": {"hidden_size": WIDTH}} for name in ("motion", "text")]
    tower = {"model_type": "merv_tower", "encoders": encoders}
    projector = MERVProjector(SimpleNamespace(hidden_size=DIM, mm_hidden_size=WIDTH, mm_vision_tower_config=tower,
                                              merv_config={"grid": [1, 1, 1], "fusion": fusion, "query_dim": 8}))
    readout = torch.nn.Linear(DIM, 1)
    optimizer = torch.optim.Adam([*projector.parameters(), *readout.parameters()], lr=3e-2)
    generator = torch.Generator().manual_seed(1)
    kind = torch.arange(32) % 2
    for _ in range(steps):
        batch, target = synthetic_clips(kind, generator)
        prediction = readout(torch.cat(projector(batch)))[:, 0]
        loss = torch.nn.functional.mse_loss(prediction, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        batch, _ = synthetic_clips(torch.tensor([0, 1]), generator)
        return projector.mixer_weights(batch), loss.detach()


def test_learnable_query_weights_follow_the_informative_encoder():
    weights, loss = fit("cross_attention_avg_lq")
    motion_clip, text_clip = weights
    assert motion_clip[0] > 0.9 and text_clip[1] > 0.9, weights
    assert loss < 0.05


def test_static_weights_cannot_follow_the_content():
    weights, _ = fit("scalar")
    torch.testing.assert_close(weights[0], weights[1])  # one fixed mixture for both kinds of clip
    assert weights[0].max() < 0.9
