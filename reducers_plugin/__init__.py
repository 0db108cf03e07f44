"""Training-free visual token reducers (FastV, VisionZip, DyCoke, PruneVid, FastVID, VidCom2, ToMe, pooling ...)
as plugins of the LLaVA-OneVision-compatible core."""
