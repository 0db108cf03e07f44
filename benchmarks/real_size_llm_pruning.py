"""The in-LLM reducer hook (stage ``llm``) at real size, on a GPU: a Qwen2.5-7B-shaped decoder stack
(random weights, ``--layers`` of its 28 layers), bf16, flash-attn 2 when installed else SDPA, one prompt of
32 frames x 196 OneVision tokens (6,272 visual) + text.

Reports: (1) keep-all pruning at layer K vs no hook (last-position logits, bf16 max abs difference);
(2) a FastV-shaped throwaway reducer (the last query's attention at layer K, top ``--keep`` of the
visual tokens) — the kept count, and prefill time without / with it (CUDA events, median of
``--reps``); (3) greedy decoding of 8 tokens runs under the hook with the cache of layers >= K holding
the kept tokens only.

    python benchmarks/real_size_llm_pruning.py --layers 4 --layer 2 --keep 0.5
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from llava.model.builder import flash_attention_available
from llava.model.token_reduction import TokenReducer, llm_reduction

VISUAL, PREFIX, SUFFIX = 32 * 196, 14, 40


class TopAttended(TokenReducer):
    """FastV's selection: the visual tokens the last prompt position attends to most (mean over heads)."""

    stage = "llm"

    def __init__(self, layer: int = 2, keep: float = 0.5):
        super().__init__()
        self.layer, self.keep = layer, keep
        self.llm_layer = layer

    def select_in_llm(self, ctx):
        kept = []
        for row, spans in enumerate(ctx.visual_spans):
            start, end = spans[0]
            scores = ctx.attention[row, :, -1, start:end].mean(0)
            count = max(1, round(self.keep * (end - start)))
            kept.append(scores.topk(count).indices.sort().values + start)
        return kept


def qwen25_7b_shaped(layers: int) -> Qwen2Config:
    return Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=layers, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6})


def timed(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--keep", type=float, default=0.5)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    import transformers

    attn = "flash_attention_2" if flash_attention_available() else "sdpa"
    report = {"torch": torch.__version__, "transformers": transformers.__version__, "attn": attn,
              "gpu": torch.cuda.get_device_name(0), "layers": args.layers, "layer": args.layer}
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qwen25_7b_shaped(args.layers)).to("cuda", torch.bfloat16).eval()
    model.config._attn_implementation = attn
    length = PREFIX + VISUAL + SUFFIX
    embeds = torch.randn(1, length, 3584, device="cuda", dtype=torch.bfloat16) * 0.02
    spans = [[(PREFIX, PREFIX + VISUAL)]]

    plain = model(inputs_embeds=embeds).logits[0, -1].float()
    with llm_reduction(model, TopAttended(args.layer, 1.0), spans):
        kept_all = model(inputs_embeds=embeds).logits[0, -1].float()
    report["keep_all_max_abs_diff"] = float((plain - kept_all).abs().max())
    report["logit_scale"] = float(plain.abs().max())

    reducer = TopAttended(args.layer, args.keep)
    with llm_reduction(model, reducer, spans) as session:
        pruned = model(inputs_embeds=embeds).logits[0, -1].float()
        report["kept_positions"] = int((session.kept_positions >= 0).sum())
    report["pruned_vs_plain_max_abs_diff"] = float((plain - pruned).abs().max())
    report["prefill_ms_plain"] = timed(lambda: model(inputs_embeds=embeds), args.reps)
    with llm_reduction(model, reducer, spans):
        report["prefill_ms_pruned"] = timed(lambda: model(inputs_embeds=embeds), args.reps)
    with llm_reduction(model, reducer, spans):
        out = model.generate(inputs_embeds=embeds, max_new_tokens=8, do_sample=False, return_dict_in_generate=True)
    cache = out.past_key_values
    report["cache_lengths_by_layer"] = [int(cache.layers[i].keys.shape[-2]) for i in range(args.layers)]
    report["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
