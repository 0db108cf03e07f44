"""``HIComConfig``: every option of the HICom compressor, and the release's name grammar.

The released code chose its compressor from a string (``mm_projector_type="local43_global32"``) plus
``use_guide``. Here that string is parsed once, by :func:`parse_release_projector_type`, into explicit
fields; the modules only ever read the fields.

Two presets exist (``PRESETS``):

* ``"paper"``: what the CVPR paper describes: direct injection on the local branch (through an MLP),
  coarse (adaLN, Eq. 3) on the global branch, fine injection per Eq. 4, a 3/8-3/8-2/8 channel-split
  position embedding added to the keys only, mean pooling of each group, pad-and-mask grouping, keys
  of the local attention taken from the same features as the values (Eq. 1).
* ``"release"``: what the released checkpoint computes: direct injection on *both* branches (the
  ``_coarse`` suffix of the release scripts is never parsed, so the 32 global tokens are identical),
  the release's post-norm coarse/fine formulas, a position embedding that sums three full-width 1-D
  tables and is added to keys and values, trilinear pooling, overlapping groups, local keys from the
  SigLIP dense embeddings.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from llava.plugin import OptionsMixin, check_int

logger = logging.getLogger(__name__)

INJECTIONS = ("none", "direct", "coarse", "fine")
FORMULAS = ("paper", "release")
POS_EMB_FORMS = ("split", "sum")
QUERY_POOLS = ("mean", "trilinear")
GROUP_SCHEMES = ("pad", "overlap")
LOCAL_MODES = ("attention", "average")
MODALITIES = ("image", "video", "text")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"HIComConfig.{name}={value!r}; allowed values: {', '.join(allowed)}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    check_int("HIComConfig", name, value, minimum)


@dataclass(frozen=True)
class HIComConfig(OptionsMixin):
    """Options of :class:`hicom_plugin.HIComCompressor`. Defaults are the ``"paper"`` preset.

    Attributes:
        local_kernel: group size ``(alpha_T, alpha_H, alpha_W)`` of the local branch, or ``None`` for
            no local branch. Images and 1-frame items use ``alpha_T = 1``.
        num_global_queries: learnable queries of the global branch; ``0`` means no global branch.
        local_injection, global_injection: how the instruction enters each branch's queries:
            ``"none"`` (unconditional), ``"direct"`` (the query *is* the pooled text embedding),
            ``"coarse"`` (adaLN from the pooled text embedding), ``"fine"`` (cross-attention to the
            text tokens).
        coarse_formula: ``"paper"``: ``LN(A) * scale + shift``; ``"release"``:
            ``LN(A * (1 + scale) + shift)``.
        fine_formula: ``"paper"``: ``Attn(LN(A), C_f, C_f)``; ``"release"``:
            ``LN(A + Attn(A, C_f, C_f))``.
        fine_pad_mask: mask instruction padding in fine injection (the release attends to padding).
        pos_emb: ``"split"``: sin/cos tables of 3/8, 3/8, 2/8 of the channels for (t, h, w),
            concatenated; ``"sum"``: the sum of three full-width tables (symmetric in the axes).
        pos_emb_on_values: add the position embedding to the global values too (release), not only
            to the keys (paper).
        local_mode: ``"attention"`` (HICom: the query attends over its group) or ``"average"``: each
            group's token is the uniform mean of its members through the readout MLP, the plain
            ``(alpha_T, alpha_H, alpha_W)`` average-pool baseline (no injection, no adapters).
        query_pool: local query before injection: ``"mean"`` of the group's members, or
            ``"trilinear"`` resize to the group grid with ``align_corners=False`` (release).
        group_scheme: grouping of an axis whose length ``n`` is not a multiple of ``k``; both give
            ``ceil(n / k)`` groups. ``"pad"``: consecutive groups, the last one partly masked;
            ``"overlap"``: every group holds ``min(n, k)`` real members and the last groups are
            shifted back to overlap their predecessors (the release's intent, without its crash).
        dense_keys: in a guided local branch, take the keys from the tower's dense embeddings
            (``VisualBatch.dense_embeds``, release) instead of the features (paper Eq. 1). An
            unguided local branch always uses the features.
        adapt_q, adapt_k, adapt_v, adapt_g: gated residual adapters of the local branch,
            ``x <- (1 - a) x + a LN(f(x))`` with the gate ``a`` initialised to 0, on the pooled query,
            the keys, the values and the instruction (release letters ``local43_adapt...``).
            ``adapt_q`` is meaningless with direct injection and ``adapt_g`` without injection.
        global_adapt_g: the same instruction adapter for the global branch (release
            ``global32adaptg``).
        direct_mlp: direct injection maps the pooled text embedding through an MLP (paper); without
            it the embedding is used as it is (release), unless its width differs from the query's.
        attn_head_dim: target head width of the multi-head attentions (global branch, fine
            injection): ``dim // attn_head_dim`` heads when that divides ``dim``; see
            :func:`num_attention_heads`.
        max_num_frames: initial length of the cached sin/cos tables; they grow when exceeded.
        return_attention: keep the last attention maps on the compressor (``last_attention``).
    """

    local_kernel: tuple[int, int, int] | None = (4, 3, 3)
    num_global_queries: int = 32
    local_injection: str = "direct"
    global_injection: str = "coarse"
    coarse_formula: str = "paper"
    fine_formula: str = "paper"
    fine_pad_mask: bool = True
    pos_emb: str = "split"
    pos_emb_on_values: bool = False
    local_mode: str = "attention"
    query_pool: str = "mean"
    group_scheme: str = "pad"
    dense_keys: bool = False
    adapt_q: bool = False
    adapt_k: bool = False
    adapt_v: bool = False
    adapt_g: bool = False
    global_adapt_g: bool = False
    direct_mlp: bool = True
    attn_head_dim: int = 128
    max_num_frames: int = 128
    return_attention: bool = False

    def __post_init__(self) -> None:
        kernel = self.local_kernel
        if kernel is not None:
            if isinstance(kernel, (list, tuple)):
                kernel = tuple(kernel)
                object.__setattr__(self, "local_kernel", kernel)
            if not isinstance(kernel, tuple) or len(kernel) != 3:
                raise ValueError(
                    f"HIComConfig.local_kernel={self.local_kernel!r}; expected three integers "
                    "(alpha_T, alpha_H, alpha_W) >= 1, or None for no local branch"
                )
            for axis, k in zip("THW", kernel):
                _check_int(f"local_kernel[alpha_{axis}]", k, 1)
        _check_int("num_global_queries", self.num_global_queries, 0)
        _check_int("attn_head_dim", self.attn_head_dim, 1)
        _check_int("max_num_frames", self.max_num_frames, 1)
        if kernel is None and self.num_global_queries == 0:
            raise ValueError(
                "HIComConfig: local_kernel=None and num_global_queries=0 leave no branch; "
                "enable at least one"
            )
        _check_choice("local_injection", self.local_injection, INJECTIONS)
        _check_choice("global_injection", self.global_injection, INJECTIONS)
        _check_choice("coarse_formula", self.coarse_formula, FORMULAS)
        _check_choice("fine_formula", self.fine_formula, FORMULAS)
        _check_choice("pos_emb", self.pos_emb, POS_EMB_FORMS)
        _check_choice("local_mode", self.local_mode, LOCAL_MODES)
        _check_choice("query_pool", self.query_pool, QUERY_POOLS)
        _check_choice("group_scheme", self.group_scheme, GROUP_SCHEMES)
        for name in ("fine_pad_mask", "pos_emb_on_values", "dense_keys", "adapt_q", "adapt_k",
                     "adapt_v", "adapt_g", "global_adapt_g", "direct_mlp", "return_attention"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"HIComConfig.{name}={getattr(self, name)!r}; expected True or False")

        # Options that would silently do nothing are refused, so the config says what runs.
        if kernel is None:
            if self.local_injection != "none":
                raise ValueError(
                    f"HIComConfig: local_kernel=None disables the local branch, but "
                    f"local_injection={self.local_injection!r}; set it to 'none'"
                )
            used = [n for n in ("adapt_q", "adapt_k", "adapt_v", "adapt_g") if getattr(self, n)]
            if used:
                raise ValueError(f"HIComConfig: {used} need a local branch, but local_kernel=None")
        if self.local_mode == "average":
            used = [n for n in ("adapt_q", "adapt_k", "adapt_v", "adapt_g", "dense_keys") if getattr(self, n)]
            if kernel is None or self.local_injection != "none" or used:
                raise ValueError(
                    "HIComConfig.local_mode='average' is the plain average-pool baseline: it needs a "
                    f"local_kernel, local_injection='none' and no local adapters/dense keys (got "
                    f"local_kernel={kernel}, local_injection={self.local_injection!r}, {used or 'no adapters'})"
                )
        if self.num_global_queries == 0 and self.global_injection != "none":
            raise ValueError(
                f"HIComConfig: num_global_queries=0 disables the global branch, but "
                f"global_injection={self.global_injection!r}; set it to 'none'"
            )
        if self.adapt_q and self.local_injection == "direct":
            raise ValueError(
                "HIComConfig.adapt_q=True has no effect with local_injection='direct' (the query is "
                "replaced by the instruction); turn one of them off"
            )
        if self.adapt_g and self.local_injection == "none":
            raise ValueError("HIComConfig.adapt_g=True needs local_injection != 'none'")
        if self.global_adapt_g and self.global_injection == "none":
            raise ValueError("HIComConfig.global_adapt_g=True needs global_injection != 'none'")

    # ---- what the compressor needs from the caller -------------------------------------------
    @property
    def has_local(self) -> bool:
        return self.local_kernel is not None

    @property
    def has_global(self) -> bool:
        return self.num_global_queries > 0

    @property
    def injections(self) -> tuple[str, ...]:
        """Injection types of the branches that exist."""
        out = []
        if self.has_local:
            out.append(self.local_injection)
        if self.has_global:
            out.append(self.global_injection)
        return tuple(out)

    @property
    def uses_text(self) -> bool:
        return any(i != "none" for i in self.injections)

    @property
    def needs_text_pooled(self) -> bool:
        """A branch reads the pooled instruction embedding ``C_p`` (direct or coarse injection)."""
        return any(i in ("direct", "coarse") for i in self.injections)

    @property
    def needs_text_tokens(self) -> bool:
        """A branch reads the token-level instruction embeddings ``C_f`` (fine injection)."""
        return "fine" in self.injections

    @property
    def needs_dense_embeds(self) -> bool:
        """The local branch takes its keys from ``dense_embeds``."""
        return self.has_local and self.local_injection != "none" and self.dense_keys

    def temporal_kernel(self, t: int, modality: str = "video") -> int:
        """``alpha_T`` used for an item: 1 for images, text dummies and single frames."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        if self.local_kernel is None or modality != "video" or t == 1:
            return 1
        return self.local_kernel[0]

    def num_output_tokens(self, t: int, h: int, w: int, modality: str = "video") -> int:
        """Tokens produced for one item: ``ceil(t/aT) * ceil(h/aH) * ceil(w/aW) + num_global_queries``."""
        for name, n in (("t", t), ("h", h), ("w", w)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"num_output_tokens: {name}={n!r}; expected an integer >= 1")
        n_local = 0
        if self.local_kernel is not None:
            _, kh, kw = self.local_kernel
            kt = self.temporal_kernel(t, modality)
            n_local = math.ceil(t / kt) * math.ceil(h / kh) * math.ceil(w / kw)
        return n_local + self.num_global_queries


def num_attention_heads(dim: int, head_dim: int) -> int:
    """Heads of a ``dim``-wide attention: the largest divisor of ``dim`` not above ``max(1, dim // head_dim)``.

    This is ``dim // head_dim`` whenever ``head_dim`` divides ``dim`` (SigLIP: 1152 -> 9 heads of 128),
    and never fails: 1000 -> 5 heads of 200, anything narrower than ``head_dim`` -> 1 head.
    """
    target = max(1, dim // head_dim)
    return next(h for h in range(target, 0, -1) if dim % h == 0)


PRESETS: dict[str, HIComConfig] = {
    "paper": HIComConfig(),
    "release": HIComConfig(
        local_injection="direct",
        global_injection="direct",
        coarse_formula="release",
        fine_formula="release",
        fine_pad_mask=False,
        pos_emb="sum",
        pos_emb_on_values=True,
        query_pool="trilinear",
        group_scheme="overlap",
        dense_keys=True,
        direct_mlp=False,
    ),
}

# ---- the release grammar -------------------------------------------------------------------------

_USE_GUIDE = {None: "none", "off": "none", "direct": "direct", "coarse": "coarse", "fine": "fine"}
_GUIDE_WORDS = {"off": "none", "none": "none", "direct": "direct", "coarse": "coarse", "fine": "fine"}
_GRAMMAR = (
    "'local<aT><aS>[_adapt<q|k|v|g>...][guide<off|direct|coarse|fine>]' and/or "
    "'global<N>[adaptg][guide<off|direct|coarse|fine>]', joined by '_' "
    "(e.g. local43_global32, local43_adaptkv_global32, local43_global32guidecoarse, local413_global32); "
    "aS may have one or two digits"
)
_MODIFIER = re.compile(
    r"_?(?:adapt(?P<letters>[a-z]*?)(?=guide|_|$)|guide(?P<guide>[a-z]*)|(?P<word>[a-z0-9]+))"
)


def _grammar_error(text: str, reason: str) -> ValueError:
    return ValueError(f"mm_projector_type={text!r}: {reason}. Expected {_GRAMMAR}")


def _split_phases(text: str) -> dict[str, tuple[str, str]]:
    """``"local43_adaptkv_global32"`` -> ``{"local": ("43", "_adaptkv"), "global": ("32", "")}``."""
    parts = re.split(r"(local|global)", text)
    if parts[0]:
        raise _grammar_error(text, f"unexpected text {parts[0]!r} before the first phase")
    if len(parts) == 1:
        raise _grammar_error(text, "no 'local' or 'global' phase")
    phases: dict[str, tuple[str, str]] = {}
    for i in range(1, len(parts), 2):
        name, body = parts[i], parts[i + 1]
        if name in phases:
            raise _grammar_error(text, f"'{name}' appears twice")
        if i + 2 < len(parts) and body.endswith("_"):
            body = body[:-1]  # the '_' that joins this phase to the next
        digits = re.match(r"\d*", body).group()
        phases[name] = (digits, body[len(digits):])
    return phases


def _parse_modifiers(text: str, branch: str, rest: str) -> tuple[str, str | None, list[str]]:
    """Returns ``(adapter letters, forced injection or None, ignored words)`` of one phase."""
    letters, forced, ignored = "", None, []
    pos = 0
    while pos < len(rest):
        match = _MODIFIER.match(rest, pos)
        if match is None or match.end() == pos:
            raise _grammar_error(text, f"cannot read {rest[pos:]!r} in the {branch} phase")
        pos = match.end()
        if match.group("letters") is not None:
            if letters:
                raise _grammar_error(text, f"two 'adapt' fragments in the {branch} phase")
            letters = match.group("letters")
            allowed = "qkvg" if branch == "local" else "g"
            if not letters or set(letters) - set(allowed) or len(set(letters)) != len(letters):
                raise _grammar_error(
                    text, f"'adapt{letters}' in the {branch} phase; allowed letters: {allowed} (each once)"
                )
        elif match.group("guide") is not None:
            kind = match.group("guide")
            if kind not in _GUIDE_WORDS:
                raise _grammar_error(text, f"'guide{kind}': unknown injection {kind!r}")
            if forced is not None:
                raise _grammar_error(text, f"two 'guide' fragments in the {branch} phase")
            forced = _GUIDE_WORDS[kind]
        elif match.group("word") in ("direct", "coarse", "fine"):
            # The release scripts end in '_coarse', which their parser never reads.
            ignored.append(match.group("word"))
        else:
            raise _grammar_error(text, f"unknown fragment {match.group('word')!r} in the {branch} phase")
    return letters, forced, ignored


def parse_release_projector_type(mm_projector_type: str, use_guide: str | None) -> HIComConfig:
    """Reads the release's ``mm_projector_type`` + ``use_guide`` into a config with release options.

    It reproduces what the release builds, including its quirks:

    * ``use_guide`` (``None``/``"off"``/``"direct"``/``"coarse"``/``"fine"``) sets the injection
      of both branches; a ``guide<X>`` fragment overrides it for its branch.
    * ``local<aT><aS>`` gives the kernel ``(aT, aS, aS)``; three digits read as ``aT`` then a
      two-digit ``aS`` (``local413`` -> ``(4, 13, 13)``).
    * A bare ``_coarse`` / ``_fine`` / ``_direct`` word (release script ``local43_global32_coarse``)
      is ignored, as the release does; a warning says so.
    * ``adapt...q`` with local direct injection and ``adapt...g`` on an unguided branch are
      dropped, as the release does (a warning says so).

    Raises:
        ValueError: on anything else, with the expected grammar.
    """
    if not isinstance(mm_projector_type, str):
        raise ValueError(f"mm_projector_type must be a string, got {type(mm_projector_type).__name__}")
    if use_guide not in _USE_GUIDE:
        raise ValueError(f"use_guide={use_guide!r}; expected None, 'off', 'direct', 'coarse' or 'fine'")
    text = mm_projector_type.strip()
    if re.fullmatch(r"mlp\d+x_gelu|linear|identity", text):
        raise ValueError(f"mm_projector_type={text!r} is a token-wise projector, not HICom. Expected {_GRAMMAR}")
    base = _USE_GUIDE[use_guide]
    fields: dict[str, Any] = {"local_kernel": None, "num_global_queries": 0,
                              "local_injection": "none", "global_injection": "none"}
    ignored: list[str] = []
    for branch, (digits, rest) in _split_phases(text).items():
        letters, forced, dropped_words = _parse_modifiers(text, branch, rest)
        ignored += dropped_words
        injection = forced if forced is not None else base
        if branch == "local":
            if len(digits) == 2:
                kernel = (int(digits[0]), int(digits[1]), int(digits[1]))
            elif len(digits) == 3:
                kernel = (int(digits[0]), int(digits[1:]), int(digits[1:]))
            else:
                raise _grammar_error(text, f"'local{digits}' needs 2 or 3 digits after 'local'")
            if min(kernel) < 1:
                raise _grammar_error(text, f"kernel {kernel} has a size below 1")
            adapt_q = "q" in letters
            if adapt_q and injection == "direct":
                logger.warning("%s: 'adapt q' is dropped under direct injection, as in the release", text)
                adapt_q = False
            adapt_g = "g" in letters
            if adapt_g and injection == "none":
                logger.warning("%s: 'adapt g' is dropped without injection, as in the release", text)
                adapt_g = False
            fields.update(local_kernel=kernel, local_injection=injection, adapt_q=adapt_q,
                          adapt_k="k" in letters, adapt_v="v" in letters, adapt_g=adapt_g)
        else:
            if not digits or int(digits) < 1:
                raise _grammar_error(text, f"'global{digits}' needs a number of queries >= 1")
            global_adapt_g = letters == "g"
            if global_adapt_g and injection == "none":
                logger.warning("%s: 'adaptg' is dropped without injection, as in the release", text)
                global_adapt_g = False
            fields.update(num_global_queries=int(digits), global_injection=injection,
                          global_adapt_g=global_adapt_g)
    if ignored:
        logger.warning(
            "%s: the suffix word(s) %s are ignored, as the release parser ignores them; use "
            "'guide<type>' to set a branch's injection", text, ignored,
        )
    return PRESETS["release"].replace(**fields)


def resolve_hicom_config(name: str, *, use_guide: str | None = None, **overrides: Any) -> HIComConfig:
    """A preset name (``"paper"``, ``"release"``) or a release ``mm_projector_type`` string, plus overrides.

    ``use_guide`` only applies to release strings (it is the release's ``--use_guide`` flag).
    """
    if name in PRESETS:
        if use_guide is not None:
            raise ValueError(
                f"resolve_hicom_config: use_guide={use_guide!r} only applies to release strings; "
                f"for preset {name!r} set local_injection / global_injection instead"
            )
        cfg = PRESETS[name]
    else:
        try:
            cfg = parse_release_projector_type(name, use_guide)
        except ValueError as err:
            raise ValueError(f"{err}. Presets: {sorted(PRESETS)}") from None
    return cfg.replace(**overrides) if overrides else cfg
