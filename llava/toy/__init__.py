"""Toy fixtures: everything the offline demos and tests build instead of downloading.

* :mod:`llava.toy.tiny`: tiny random-weight checkpoints (SigLIP with vision and text towers, Qwen2
  with a byte-level BPE tokenizer, and a ``llava_qwen`` assembled from them), in seconds;
* :mod:`llava.toy.tiny_lit`: the tiny SigLIP with its text tower tuned on the synthetic tiles, the
  stand-in for a pre-trained SigLIP;
* :mod:`llava.toy.synthetic`: synthetic instruction-dependent video QA in the project's real formats;
* :mod:`llava.toy.walkthrough`: one video through untrained tiny models, printing token counts
  (``make walkthrough``).

Nothing in ``llava`` outside this package imports it: the core runs without the fixtures.
"""
