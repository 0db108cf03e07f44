"""Multiple-choice video QA inference (Video-MME with or without subtitles, MVBench, EgoSchema, MLVU).

    python -m llava.eval.model_video_mcqa --benchmark mvbench --model-path CKPT \\
        --question-file MVBench/json --video-folder MVBench/video --answers-file out/4_0.jsonl \\
        --num-chunks 4 --chunk-idx 0 --num-frames 32

Writes the raw model text; letters are extracted when scoring (``llava.eval.eval_video_mcqa``), so
the parser version can be chosen afterwards. See ``llava.eval.video_infer`` for the flags.
"""

import sys

from .video_infer import make_main

main = make_main("mcqa", max_new_tokens=16, description=__doc__)

if __name__ == "__main__":
    sys.exit(main())
