"""Video benchmark evaluation in the ``model_vqa`` style.

* ``benchmarks``: released question-file layouts -> ``questions.VideoQuestion``; prompts per style.
* ``video_infer`` (``model_video_mcqa`` / ``model_video_oqa``): chunked, resumable inference.
* ``merge``: chunk answers files -> one file in question order.
* ``scoring`` + ``eval_video_mcqa``: official letter extraction (parser versions) and tables.
* ``eval_oqa_judge``: open-ended answers scored by an OpenAI-compatible LLM judge.
* ``compare``: the equal-budget comparison of checkpoints, projectors and token reducers
  (``measure``: per-answer counts, time to first token, memory; ``flops``; ``plots``).

Shell drivers that run all of this over the GPUs of a machine are in ``scripts/eval/video/``.
"""
