"""Training-free visual-token reducers (pooling baselines, random drop, ToMe, VidCom2, DyCoke-TTM, VisionZip,
FastVID, FastV) as a plugin of the LLaVA-OneVision-compatible core; see ``README.md`` and ``plugin.py``."""
