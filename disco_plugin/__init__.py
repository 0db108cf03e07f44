"""DisCo (ICCV 2025, arXiv 2507.10302) as a plugin of the LLaVA-OneVision-compatible core."""
