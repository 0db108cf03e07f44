"""Open-ended video QA inference (ActivityNet-QA, the VideoChatGPT bench's generic, temporal and
consistency question files).

    python -m llava.eval.model_video_oqa --benchmark activitynet --model-path CKPT \\
        --question-file ActivityNet-QA/test_q.json --gt-file ActivityNet-QA/test_a.json \\
        --video-folder ActivityNet-QA/all_test --answers-file out/1_0.jsonl

Answers are judged afterwards by ``llava.eval.eval_oqa_judge``. See ``llava.eval.video_infer`` for
the flags.
"""

import sys

from .video_infer import make_main

main = make_main("oqa", max_new_tokens=1024, description=__doc__)

if __name__ == "__main__":
    sys.exit(main())
