"""``DiscoProjector`` on the tiny SigLIP: losses through the aux-loss hook, what the gradients reach,
weights 0 == a plain resampler, batched == per item, and bad input."""

from __future__ import annotations

import json
import types

import pytest
import torch

from disco_plugin.instances import parse_instances, set_instance_limit
from disco_plugin.projector import TFC, VCD, DiscoProjector
from llava.model.visual import VisualBatch

FRAMES = [3, 1, 2, 1]
MODALITIES = ["video", "image", "video", "text"]
INSTANCES = [["a red tile", "a blue tile", "a green tile"], [], ["a cat"], []]


def _config(tiny_dir, weights=(1.0, 1.0), **overrides):
    return types.SimpleNamespace(
        mm_projector_type="disco", disco_preset="tiny", disco_overrides=overrides or None,
        mm_vision_tower=str(tiny_dir / "siglip-tiny"), mm_hidden_size=32, hidden_size=64,
        aux_loss_weights={VCD: weights[0], TFC: weights[1]})


def _build(tiny_dir, seed=0, **kwargs):
    torch.manual_seed(seed)
    return DiscoProjector(_config(tiny_dir, **kwargs)).train()


def _batch(seed=1, instances=INSTANCES, frames=FRAMES, modalities=MODALITIES):
    torch.manual_seed(seed)
    return VisualBatch(torch.randn(sum(frames), 7, 7, 32), list(frames), list(modalities),
                       fields={"instances": [list(i) for i in instances]})


@pytest.fixture(scope="module")
def projector(tiny_dir):
    return _build(tiny_dir)


def test_losses_reach_the_resampler_and_heads_not_the_text_tower(projector):
    projector.zero_grad(set_to_none=True)
    before = {n: p.detach().clone() for n, p in projector.instance_encoder.named_parameters()}
    out = projector(_batch())
    assert set(out.losses) == {VCD, TFC} and all(float(v.detach()) > 0 for v in out.losses.values())
    (out.losses[VCD] + out.losses[TFC]).backward()
    grads = {n: p.grad for n, p in projector.named_parameters()}
    for name in ("resampler.queries", "resampler.layers.0.cross_attn.k_proj.weight", "heads.v_proj.weight",
                 "heads.t_proj.weight", "heads.vcd_temperature", "heads.tfc_temperature"):
        assert grads[name] is not None and float(grads[name].abs().sum()) > 0, name
    assert all(grads[n] is None for n in grads if n.startswith("instance_encoder."))
    assert all(not p.requires_grad for p in projector.instance_encoder.parameters())
    assert all(torch.equal(p, before[n]) for n, p in projector.instance_encoder.named_parameters())
    assert "disco_text_tower" in projector.tunable_parts()


@pytest.mark.parametrize("loss", [VCD, TFC])
def test_each_loss_alone_reaches_the_resampler(tiny_dir, loss):
    model = _build(tiny_dir, weights=(1.0, 0.0) if loss == VCD else (0.0, 1.0))
    out = model(_batch())
    assert set(out.losses) == {loss}
    out.losses[loss].backward()
    assert float(model.resampler.layers[0].cross_attn.k_proj.weight.grad.abs().sum()) > 0


def test_weights_zero_is_a_plain_resampler(tiny_dir):
    off = _build(tiny_dir, weights=(0.0, 0.0))
    plain = _build(tiny_dir, vcd=False, tfc=False)
    plain.resampler.load_state_dict(off.resampler.state_dict())
    batch = _batch()
    out_off, out_plain = off(batch), plain(batch)
    assert out_off.losses == {} and out_plain.losses == {}
    target = torch.randn(len(FRAMES), 12, 64)
    grads = []
    for model, out in ((off, out_off), (plain, out_plain)):
        assert len(out.tokens) == len(FRAMES)
        ((torch.stack(out.tokens) - target) ** 2).mean().backward()
        grads.append({n: p.grad for n, p in model.resampler.named_parameters()})
    assert all(torch.equal(a, b) for a, b in zip(out_off.tokens, out_plain.tokens))
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])
    assert plain.instance_encoder is None  # no text tower is needed without VCD


def test_batched_losses_equal_the_per_item_ones(projector):
    """Every item alone (1e-6), then the batch: VCD's mean over pairs and TFC's mean over (frame, token)
    are the pair- and frame-weighted means of the per-item values."""
    batch = _batch(seed=2)
    with torch.no_grad():
        full = projector(batch)
        per_item = []
        for i, feats in enumerate(batch.features.split(batch.frames_per_item)):
            one = VisualBatch(feats, [FRAMES[i]], [MODALITIES[i]], fields={"instances": [INSTANCES[i]]})
            alone = projector(one)
            assert torch.allclose(alone.tokens[0], full.tokens[i], atol=1e-6)
            per_item.append(alone.losses)
    pairs = [len(projector.instance_lists(_batch(instances=[i], frames=[1], modalities=[m]))[0])
             for i, m in zip(INSTANCES, MODALITIES)]
    assert pairs == [3, 0, 3, 0]  # "a cat" is filled with foreground and background
    vcd = sum(float(losses[VCD]) * n for losses, n in zip(per_item, pairs)) / sum(pairs)
    weights = [f * 12 if n else 0 for f, n in zip(FRAMES, pairs)]
    tfc = sum(float(losses[TFC]) * w for losses, w in zip(per_item, weights)) / sum(weights)
    assert float(full.losses[VCD]) == pytest.approx(vcd, abs=1e-6)
    assert float(full.losses[TFC]) == pytest.approx(tfc, abs=1e-6)
    assert float(per_item[1][VCD]) == 0.0 and float(per_item[3][TFC]) == 0.0


def test_zero_losses_without_instances_and_none_in_eval(projector):
    out = projector(_batch(instances=[[], [], [], []]))
    assert {k: float(v.detach()) for k, v in out.losses.items()} == {VCD: 0.0, TFC: 0.0}
    assert all(v.requires_grad for v in out.losses.values())  # same graph on every rank
    projector.eval()
    try:
        plain = VisualBatch(torch.randn(3, 7, 7, 32), [3], ["video"])  # no fields at all
        assert projector(plain).losses == {} and projector(plain).tokens[0].shape == (12, 64)
    finally:
        projector.train()


@pytest.mark.parametrize("value, reason", [
    ("a cat", "expected a list of strings"),
    (["a cat", 3], "must be a string"),
    (["a cat", "  "], "empty instance phrase"),
    (["a cat", "a cat"], "repeated instance phrases"),
    (["a", "b", "c", "d", "e"], "5 instances but the DisCo projector pairs at most 4"),
])
def test_bad_instance_lists_are_refused_with_the_reason(projector, value, reason):
    with pytest.raises(ValueError, match=reason):
        parse_instances(value)


def test_truncation_is_the_prototype_option(tiny_dir):
    model = _build(tiny_dir, truncate_instances=True)
    try:
        assert parse_instances(["a", "b", "c", "d", "e"]) == ["a", "b", "c", "d", "e"]
        lists = model.instance_lists(_batch(instances=[["a", "b", "c", "d", "e"]], frames=[2], modalities=["video"]))
        assert lists == [["a", "b", "c", "d"]] and model.counts["truncated"] == 1
    finally:
        set_instance_limit(4)


def test_vcd_without_a_text_tower_fails_at_build(tiny_dir, tmp_path):
    vision_only = tmp_path / "vision-only"
    vision_only.mkdir()
    raw = json.loads((tiny_dir / "siglip-tiny" / "config.json").read_text())
    (vision_only / "config.json").write_text(json.dumps({**raw["vision_config"], "model_type": "siglip_vision_model"}))
    config = _config(tiny_dir)
    config.mm_vision_tower = str(vision_only)
    with pytest.raises(ValueError, match=r"VCD needs SigLIP's text tower: .*vision-only.*config.json: not a SigLIP checkpoint"):
        DiscoProjector(config)
    config = _config(tiny_dir)
    config.mm_vision_tower = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere has no config.json"):
        DiscoProjector(config)


@pytest.mark.parametrize("strict", [False, True])
def test_a_bad_record_is_a_counted_skip_or_an_error_naming_it(projector, strict, tmp_path):
    from disco_plugin.plugin import PLUGIN
    from llava.train.data import DataError, DataReport, build_sample_specs

    def record(index, instances):
        return {"_where": f"captions.json[{index}]", "_record": {
            "id": f"v{index}", "video": "v.mp4", "instances": instances,
            "conversations": [{"from": "human", "value": "<video>"}, {"from": "gpt", "value": "A red tile."}]}}

    items = [record(0, ["a red tile"]), record(1, ["a red tile", ""]), record(2, ["a blue tile"])]
    report = DataReport()
    build = lambda: build_sample_specs(items, {"video": str(tmp_path), "image": str(tmp_path)}, report, strict,  # noqa: E731
                                       False, None, list(PLUGIN.sample_fields))
    if strict:
        with pytest.raises(DataError, match=r"captions.json\[1\]: field 'instances': empty instance phrase"):
            build()
    else:
        specs = build()
        assert [spec.fields["instances"] for spec in specs] == [["a red tile"], ["a blue tile"]]
        assert report.skipped == {"bad_instances": 1}


def test_tfc_on_matched_tokens_only(tiny_dir):
    """``tfc_tokens='matched'``: the tokens of the groups paired with an instance, nothing else."""
    from disco_plugin.losses import tfc_loss

    model = _build(tiny_dir, tfc_tokens="matched")
    model.keep_focus = True
    batch = _batch(seed=3)
    with torch.no_grad():
        out = model(batch)
        states = model.resampler(batch.features, batch.frames_per_item)
    assignment = model.last["assignment"]
    counts = [len(p) for p in model.instance_lists(batch)]
    tokens = torch.zeros(len(counts), 12, dtype=torch.bool)
    for item, count in enumerate(counts):
        for group in assignment[item, :count].tolist():
            tokens[item, group * 2:(group + 1) * 2] = True
    assert tokens.sum().item() == 2 * sum(counts) and not tokens[:, 8:].any()  # global tokens never take part
    expected = tfc_loss(states.focus_features(), states.frame_valid, tokens, model.heads.tfc_temperature)
    assert float(out.losses[TFC]) == pytest.approx(float(expected.detach()), abs=1e-6)
