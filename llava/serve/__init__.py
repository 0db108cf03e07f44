"""Serving LLaVA / HICom checkpoints: ``python -m llava.serve.cli`` (terminal chat and one-shot answers)."""
