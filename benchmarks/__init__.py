"""Measurements of issue 8: how fast and how small, side by side (not timed tests).

    python -m benchmarks.run            # everything, <= 10 min on 2 CPU cores
    python -m benchmarks.run --quick    # small shapes, <= 1 min: checks that every benchmark runs

| id | module                         | what                                                            |
|----|--------------------------------|-----------------------------------------------------------------|
| P1 | :mod:`benchmarks.compressor`   | batched, folded compressor vs a per-video loop of the textbook form |
| P2 | :mod:`benchmarks.prefill`      | LLM prefill time and KV cache, 680 HICom vs 6272 OneVision tokens |
| P3 | :mod:`benchmarks.video`        | sampled (seeking) vs full video decode; data-loader clips/s       |
| P4 | :mod:`benchmarks.flops`        | analytic FLOPs, compressor vs SigLIP-so400m                       |
| P5 | :mod:`benchmarks.demo_stages`  | wall time per stage of the walkthrough (``llava.toy.walkthrough``)  |

Results go to ``benchmarks/results/<name>.json`` and ``benchmarks/results/latest.md``
(``--quick``: ``benchmarks/results/quick/``); ``BENCHMARKS.md`` at the repository root discusses them.
"""
