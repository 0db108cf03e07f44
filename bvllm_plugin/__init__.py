"""B-VLLM (ICCV 2025, arXiv 2412.09919) as a plugin of the LLaVA-OneVision-compatible core."""
