"""Upstream's launcher name: ``deepspeed llava/train/train_mem.py ...`` (or ``python -m llava.train.train_mem``).

Upstream forces flash-attn here; this entry point takes ``--attn_implementation`` (default sdpa;
``flash_attention_2`` when flash-attn is installed and a GPU is present).
"""

import sys

from llava.train.train import main

if __name__ == "__main__":
    sys.exit(main())
