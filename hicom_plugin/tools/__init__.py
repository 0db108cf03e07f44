"""Tools around the HICom modules: converting checkpoints, the toy-scale demo, its figures.

* :mod:`hicom_plugin.tools.release`: the authors' released checkpoints converted into this code base
  (the projector's entry point registers its ``register_release_layout`` so that loading a release
  folder says how to convert it);
* :mod:`hicom_plugin.tools.demo`: the embedded default, the paper's Table 4 ablation at toy scale;
* :mod:`hicom_plugin.tools.figures`: the demo's figures.
"""
