"""Constants shared by training, inference and serving.

The values are part of the public contract: lmms-eval and users' scripts import them by name,
and ``IMAGE_TOKEN_INDEX`` / ``IGNORE_INDEX`` are baked into tokenised datasets and checkpoints.
"""

# Label value ignored by the cross-entropy loss (PyTorch's default ``ignore_index``).
IGNORE_INDEX = -100
# Placeholder id spliced into ``input_ids`` where image/video features are inserted.
IMAGE_TOKEN_INDEX = -200

DEFAULT_IMAGE_TOKEN = "<image>"
DEFAULT_IMAGE_PATCH_TOKEN = "<im_patch>"
DEFAULT_IM_START_TOKEN = "<im_start>"
DEFAULT_IM_END_TOKEN = "<im_end>"

# Serving (controller / model worker) heart-beat timings, in seconds.
CONTROLLER_HEART_BEAT_EXPIRATION = 30
WORKER_HEART_BEAT_INTERVAL = 15

# Directory where ``llava.utils.build_logger`` writes its log files.
LOGDIR = "."
