"""Serving LLaVA-style checkpoints: ``python -m llava.serve.cli`` (terminal chat and one-shot answers)."""
