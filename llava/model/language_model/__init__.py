"""LLaVA variants of HF causal LMs, one file per LLM family."""
