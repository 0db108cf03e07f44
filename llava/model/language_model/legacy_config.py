"""Config behaviour shared by every LLaVA language-model config."""

from __future__ import annotations


class LegacyKeysMixin:
    """Writes the transformers-4 keys ``rope_theta``, ``rope_scaling`` and ``torch_dtype`` next to
    transformers-5's ``rope_parameters`` and ``dtype``.

    Readers on transformers 4 (old LLaVA-NeXT + lmms-eval setups) otherwise fall back to a default
    ``rope_theta`` of 10000 instead of the checkpoint's value: a silent quality loss.
    """

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        # Our own files carry both spellings; read the transformers-5 ones and skip the
        # deprecation warnings the legacy duplicates would raise.
        if "rope_parameters" in config_dict:
            config_dict = {k: v for k, v in config_dict.items() if k not in ("rope_scaling", "rope_theta")}
        if "dtype" in config_dict:
            config_dict = {k: v for k, v in config_dict.items() if k != "torch_dtype"}
        return super().from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict:
        out = super().to_dict()
        rope = out.get("rope_parameters") or {}
        if "rope_theta" in rope:
            out["rope_theta"] = rope["rope_theta"]
        scaling = {k: v for k, v in rope.items() if k not in ("rope_theta", "rope_type")}
        if rope.get("rope_type", "default") != "default":
            out["rope_scaling"] = {"type": rope["rope_type"], "rope_type": rope["rope_type"], **scaling}
        else:
            out["rope_scaling"] = None
        return out

    def to_diff_dict(self) -> dict:
        # ``torch_dtype`` is added here, to what ``save_pretrained`` writes, and not in ``to_dict``: the
        # diff looks every key of ``to_dict`` up as an attribute, and ``config.torch_dtype`` is a
        # deprecated property that warns on every load.
        out = super().to_diff_dict()
        dtype = out.get("dtype", self.dtype)
        if dtype is not None:
            out["torch_dtype"] = str(dtype).replace("torch.", "")
        return out
