"""Instruction-conditioned video token compression (HICom, B-VLLM, MERV, DisCo, training-free reducers) on a
LLaVA-OneVision-compatible core (transformers 5)."""

from setuptools import find_packages, setup

#: Sibling plugin packages (each registers through its entry points below).
PLUGIN_PACKAGES = ("hicom_plugin", "bvllm_plugin", "merv_plugin", "disco_plugin", "reducers_plugin")

setup(
    name="hicom-llava",
    version="0.1.0",
    description="Instruction-conditioned video token compression (HICom, B-VLLM, MERV, DisCo, training-free "
                "reducers) as plugins of a LLaVA-OneVision-compatible core",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["llava", "llava.*"] + [f"{p}{s}" for p in PLUGIN_PACKAGES for s in ("", ".*")]),
    install_requires=[
        # CPU machines: install torch==2.13.0 first (the Makefile does); GPU users keep their own build.
        "torch>=2.4",
        "transformers>=5.20,<6",
        "accelerate>=1.10",
        "deepspeed>=0.17",
        "safetensors>=0.4",
        "tokenizers>=0.21",
        "sentencepiece>=0.2",
        "protobuf>=4",  # transformers requires it to build the SigLIP tokenizer
        # decord has wheels for x86-64 only; elsewhere (aarch64 / GH200, Apple silicon) PyAV decodes
        'decord>=0.6.0; platform_machine == "x86_64" or platform_machine == "AMD64"',
        "av>=12",
        "pillow>=10",
        "numpy>=1.26",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.3"],
        "gpu": ["flash-attn>=2.5"],
        # lmms-eval 0.7.3 imports filelock._api (gone in filelock 4); install it with `make eval-deps`,
        # which keeps the installed torch (docs/lmms_eval_cli.md)
        "eval": ["lmms-eval>=0.7.3,<0.8", "filelock>=3.24.2,<4"],
    },
    entry_points={
        # Plugins: each entry point names a callable that registers (llava/registry.py).
        "llava.plugins": [
            "hicom = hicom_plugin.plugin:register",
            "bvllm = bvllm_plugin.plugin:register",
            "merv = merv_plugin.plugin:register",
            "disco = disco_plugin.plugin:register",
            "reducers = reducers_plugin.plugin:register",
        ],
        "llava.projectors": ["hicom = hicom_plugin.projector:register"],
    },
)
