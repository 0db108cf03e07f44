"""DisCo: forward + backward of the resampler with both losses, batched (padded, masked) against a
per-item loop of the same math (not a timed test).

* **ours**: :class:`disco_plugin.resampler.DiscoResampler` over the whole micro-batch, then
  :class:`disco_plugin.projector.DiscoHeads` (VCD + TFC on padded tensors).
* **loop, prototype form**: the prototype's way (``ZJHTerry18/STEP``, re-stated): one item at a time
  through the resampler; focus features by materialising ``(K, C, T, HW)`` then averaging over patches
  (``pad_text_embeds``); VCD on the concatenated matched pairs with a block mask built in a loop
  (``vtc_loss``); TFC per item (``vid_tc_loss``).
* **loop, fused**: one item at a time, with our losses: the effect of batching alone.

Also: the Hungarian matching's host time per micro-batch, our solver against SciPy's (when SciPy is
installed), and the FLOPs of the resampler per video against SigLIP-so400m's vision forward.

    python -m benchmarks.disco_losses --device cuda --out benchmarks/results/disco_losses.json
    python -m benchmarks.disco_losses --quick        # small shapes on the CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import interleaved_times, machine_info, median, peak_memory_bytes
from benchmarks.flops import siglip_vision_flops
from disco_plugin.config import PRESETS
from disco_plugin.matching import linear_assignment, match_instances
from disco_plugin.projector import TFC, VCD, DiscoHeads
from disco_plugin.resampler import DiscoResampler

REAL = dict(items=4, frames=32, grid=27, vision=1152, text=1152, llm=3584, instances=(6, 10), preset="prototype")
QUICK = dict(items=3, frames=4, grid=5, vision=32, text=32, llm=64, instances=(2, 4), preset="tiny")


def make_inputs(shape: dict, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = [shape["frames"]] * shape["items"]
    feats = torch.randn(sum(frames), shape["grid"], shape["grid"], shape["vision"], generator=g).to(device)
    low, high = shape["instances"]
    counts = torch.randint(low, high + 1, (shape["items"],), generator=g)
    width = int(counts.max())
    phrases = torch.randn(shape["items"], width, shape["text"], generator=g).to(device)
    mask = (torch.arange(width)[None] < counts[:, None]).to(device)
    return feats, frames, phrases, mask


def ours(resampler, heads, feats, frames, phrases, mask) -> torch.Tensor:
    out = resampler(feats, frames)
    items = torch.ones(len(frames), dtype=torch.bool, device=feats.device)
    losses, _ = heads(out, phrases, mask, items, {VCD, TFC})
    loss = losses[VCD] + losses[TFC] + out.tokens.float().pow(2).mean()  # the tokens feed the LLM too
    loss.backward()
    return loss


def _prototype_vcd(u_matched, e_matched, nums, temperature):
    sim = u_matched @ e_matched.T
    block = torch.zeros_like(sim)
    start = 0
    for n in nums:
        block[start:start + n, start:start + n] = 1
        start += n
    eye = torch.eye(len(sim), device=sim.device)
    v2t = (sim / temperature).masked_fill(block == 0, -1e9)
    t2v = (sim.T / temperature).masked_fill(block.T == 0, -1e9)
    return (-(F.log_softmax(v2t, 1) * eye).sum(1).mean() - (F.log_softmax(t2v, 1) * eye).sum(1).mean()) / 2


def _prototype_tfc(feats, temperature):
    feats = F.normalize(feats, dim=-1)
    centres = feats.mean(2)
    sim = torch.einsum("bntc,bmc->bntm", feats, centres).permute(0, 2, 1, 3) / temperature
    eye = torch.eye(sim.shape[-1], device=sim.device).expand_as(sim)
    return (-(F.log_softmax(sim, 3) * eye).sum(2).mean() - (F.log_softmax(sim.transpose(2, 3), 3) * eye).sum(2).mean()) / 2


def loop_prototype(resampler, heads, feats, frames, phrases, mask) -> torch.Tensor:
    cfg = resampler.cfg
    u_all, e_all, nums, tfc, token_loss = [], [], [], [], 0
    for i, item in enumerate(feats.split(frames)):
        out = resampler(item, [frames[i]])
        att = torch.einsum("bctn,bqtn->bqctn", out.patches.permute(0, 3, 1, 2), out.focus).mean(-1)  # (1, K, C, T)
        tfc.append(_prototype_tfc(att.permute(0, 1, 3, 2), heads.tfc_temperature))
        groups = out.states[0, : cfg.num_local].view(cfg.num_groups, cfg.group_size, -1).mean(1)
        u = F.normalize(heads.v_proj(groups), dim=-1)
        n = int(mask[i].sum())
        e = F.normalize(heads.t_proj(phrases[i, :n]), dim=-1)
        cols = linear_assignment(-(u @ e.T).detach().cpu().numpy().T)
        u_all.append(u[torch.as_tensor(cols, device=u.device)])
        e_all.append(e)
        nums.append(n)
        token_loss = token_loss + out.tokens.float().pow(2).sum()
    vcd = _prototype_vcd(torch.cat(u_all), torch.cat(e_all), nums, heads.vcd_temperature)
    count = len(frames) * cfg.num_queries * resampler.readout[-1].out_features
    loss = vcd + torch.stack(tfc).mean() + token_loss / count
    loss.backward()
    return loss


def loop_fused(resampler, heads, feats, frames, phrases, mask) -> torch.Tensor:
    total = 0
    for i, item in enumerate(feats.split(frames)):
        total = total + ours(resampler, heads, item, [frames[i]], phrases[i:i + 1], mask[i:i + 1]).detach()
    return total


def matching_check(trials: int = 2000, seed: int = 0) -> dict:
    """Our Hungarian solver against SciPy's on random costs (instances x groups, up to 16 x 16)."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        return {"scipy": None}
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(trials):
        n = int(rng.integers(1, 17))
        cost = rng.normal(size=(n, int(rng.integers(n, 17))))
        rows, cols = linear_sum_assignment(cost)
        ours_cols = linear_assignment(cost)
        worst = max(worst, abs(cost[np.arange(n), ours_cols].sum() - cost[rows, cols].sum()))
    return {"scipy": "compared", "trials": trials, "max_total_cost_difference": worst}


def matching_host_seconds(shape: dict, device: str, repeats: int = 20) -> float:
    cfg = PRESETS[shape["preset"]]
    _, _, _, mask = make_inputs(shape, device)
    sim = torch.randn(shape["items"], cfg.num_groups, mask.shape[1], device=device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        match_instances(sim, mask)
        times.append(time.perf_counter() - start)
    return median(times)


def resampler_flops(shape: dict, device: str) -> int:
    """Forward FLOPs of the resampler for one video (matrix products, as ``FlopCounterMode`` counts)."""
    cfg = PRESETS[shape["preset"]]
    model = DiscoResampler(cfg, shape["vision"], shape["llm"]).to(device)
    feats = torch.randn(shape["frames"], shape["grid"], shape["grid"], shape["vision"], device=device)
    with FlopCounterMode(display=False) as counter:  # (under no_grad its module tracker fails)
        model(feats, [shape["frames"]])
    return counter.get_total_flops()


def run(shape: dict, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    cfg = PRESETS[shape["preset"]]
    resampler = DiscoResampler(cfg, shape["vision"], shape["llm"]).to(device)
    heads = DiscoHeads(cfg, shape["text"]).to(device)
    inputs = make_inputs(shape, device)
    fns = {name: (lambda fn=fn: fn(resampler, heads, *inputs))
           for name, fn in (("ours", ours), ("loop_prototype", loop_prototype), ("loop_fused", loop_fused))}
    times = interleaved_times(fns, repeats=repeats, warmup=1, device=device)
    memory = {name: peak_memory_bytes(fn, device) for name, fn in fns.items()}
    # the same math: the batched and the prototype-form totals agree (same weights, same inputs)
    loss_ours = float(ours(resampler, heads, *inputs).detach())
    loss_proto = float(loop_prototype(resampler, heads, *inputs).detach())
    flops = resampler_flops({**shape}, device)
    siglip = siglip_vision_flops(shape["frames"])["total"] if shape["preset"] == "prototype" else None
    return {
        "shape": {k: list(v) if isinstance(v, tuple) else v for k, v in shape.items()},
        "seconds": {k: median(v) for k, v in times.items()}, "repeats": times,
        "speedup_vs_prototype_loop": median(times["loop_prototype"]) / median(times["ours"]),
        "speedup_vs_fused_loop": median(times["loop_fused"]) / median(times["ours"]),
        "peak_bytes": memory,
        "memory_ratio_vs_prototype_loop": memory["ours"] / memory["loop_prototype"],
        "memory_ratio_vs_fused_loop": memory["ours"] / memory["loop_fused"],
        "loss_ours": loss_ours, "loss_prototype_loop": loss_proto,
        "resampler_forward_flops_per_video": flops,
        "siglip_vision_flops_per_video": siglip,
        "flops_share": flops / siglip if siglip else None,
        "matching_host_seconds_per_batch": matching_host_seconds(shape, device),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds on a CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON to write (default: print only)")
    args = parser.parse_args(argv)
    result = run(QUICK if args.quick else REAL, args.device, args.repeats)
    result["matching_vs_scipy"] = matching_check(200 if args.quick else 2000)
    result["machine"] = machine_info()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
