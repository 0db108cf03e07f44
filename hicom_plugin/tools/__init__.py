"""Tools around the HICom modules: converting checkpoints, the pictures of its toy rows.

* :mod:`hicom_plugin.tools.release`: the authors' released checkpoints converted into this code base
  (the projector's entry point registers its ``register_release_layout`` so that loading a release
  folder says how to convert it);
* :mod:`hicom_plugin.tools.figures`: what the compressor attends to, for the toy zoo's HICom rows
  (:mod:`hicom_plugin.toy`, the paper's Table 4 ablation at toy scale).
"""
