"""MERV (ICML 2025, arXiv 2501.01426) as a plugin of the LLaVA-OneVision-compatible core."""
