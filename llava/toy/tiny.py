"""Tiny, randomly initialised checkpoints with the real architectures, made offline in seconds.

Tests and the CPU demo load these with the same code that loads SigLIP-so400m and Qwen2.5-7B::

    python -m llava.toy.tiny --out playground/tiny [--seed 0] [--force] [--parts siglip qwen2 llava_qwen]

writes, under ``--out``:

* ``siglip-tiny/``: a full ``SiglipModel`` (vision + text towers, MAP pooling head), SigLIP's
  ``preprocessor_config.json`` and a SentencePiece ``SiglipTokenizer`` trained here on a built-in corpus.
* ``qwen2-tiny/``: a ``Qwen2ForCausalLM`` with a byte-level BPE ``Qwen2Tokenizer`` trained here, a
  ChatML chat template and a ``generation_config.json``.
* ``tiny-llava-qwen/``: the LLaVA model assembled from the two by ``llava.model.builder``.

Weights depend on ``--seed`` only; the tokenizers are the same for every seed. A part whose folder is
already complete is skipped (``--force`` rebuilds it, and is needed after changing ``--seed``). Each
part is built in a hidden sibling folder and renamed into place, so a folder that exists is whole.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import os
import shutil
import time
from pathlib import Path
from types import MappingProxyType

import sentencepiece as spm
import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, SiglipConfig, SiglipModel
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

from llava.model.multimodal_encoder.siglip_processor import SigLipImageProcessor
from llava.model.weights import readable_weight_files

logger = logging.getLogger(__name__)

SIGLIP_DIRNAME = "siglip-tiny"
QWEN2_DIRNAME = "qwen2-tiny"
LLAVA_QWEN_DIRNAME = "tiny-llava-qwen"

# so400m: 1152 hidden, 27 layers, 16 heads, 4304 intermediate, 384 px, patch 14 (27x27 grid).
SIGLIP_VISION_DIMS = MappingProxyType(
    dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=56, patch_size=8)
)
# The text tower's width must equal the vision width: SigLIP compares the two embeddings directly.
SIGLIP_TEXT_DIMS = MappingProxyType(
    dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
)
SIGLIP_SP_VOCAB_SIZE = 300  # SentencePiece pieces, including <pad>=0, </s>=1, <unk>=2 (SigLIP's ids)
SIGLIP_MAX_LENGTH = 64

QWEN2_DIMS = MappingProxyType(
    dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
)
QWEN2_ROPE_THETA = 1e6
QWEN2_BPE_VOCAB_SIZE = 1000  # 256 byte symbols + 744 merges; the special tokens come after
QWEN2_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 1000, 1001, 1002
# The embedding rows are len(tokenizer) rounded up to this multiple, like Qwen2.5's 152064 rows for
# 151665 tokens: code must not assume the two are equal.
QWEN2_EMBEDDING_MULTIPLE = 8
QWEN2_MAX_LENGTH = 4096

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

PARTS = ("siglip", "qwen2", "llava_qwen")
_DIRNAMES = {"siglip": SIGLIP_DIRNAME, "qwen2": QWEN2_DIRNAME, "llava_qwen": LLAVA_QWEN_DIRNAME}
# Files whose presence makes a part complete (tiny models always fit one safetensors shard).
_REQUIRED_FILES = {
    "siglip": ("config.json", "model.safetensors", "preprocessor_config.json", "spiece.model", "tokenizer_config.json"),
    "qwen2": ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"),
    "llava_qwen": ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json"),
}

# ---- built-in corpus ----------------------------------------------------------------------------

_COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "black", "white", "pink", "brown", "gray")
_SHAPES = ("triangle", "square", "circle", "rectangle", "star", "hexagon", "ball", "box", "cube", "line")
_MOTIONS = (
    "moves left", "moves right", "moves up", "moves down", "rotates slowly", "spins quickly", "bounces",
    "grows", "shrinks", "falls", "jumps", "stops", "disappears", "appears",
)
_ACTIVITIES = (
    "walking", "running", "sitting on a chair", "standing still", "cooking dinner", "reading a book",
    "playing the guitar", "riding a bike", "talking on the phone", "opening the door", "drinking water",
    "writing a letter", "washing the dishes", "dancing", "swimming", "painting a picture", "waving a hand",
)
_NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)
_PLACES = ("on the left", "on the right", "at the top", "at the bottom", "in the middle", "near the corner")
_SCENES = (
    ("dog", "chases a frisbee", "park"), ("cat", "sleeps on the sofa", "living room"),
    ("horse", "gallops across", "field"), ("bird", "lands on a branch", "garden"),
    ("child", "builds a sandcastle", "beach"), ("chef", "chops vegetables", "kitchen"),
    ("teacher", "explains mathematics", "classroom"), ("driver", "parks the truck", "street"),
    ("farmer", "harvests wheat", "countryside"), ("musician", "plays the violin", "concert hall"),
    ("student", "studies chemistry", "library"), ("doctor", "examines a patient", "hospital"),
    ("climber", "reaches the summit", "mountain"), ("fisherman", "catches a salmon", "river"),
    ("baker", "decorates a birthday cake", "bakery"), ("pilot", "lands the airplane", "airport"),
    ("gardener", "waters the flowers", "greenhouse"), ("skier", "descends the slope", "snowy valley"),
    ("scientist", "measures the temperature", "laboratory"), ("carpenter", "assembles furniture", "workshop"),
)


def caption_corpus() -> list[str]:
    """Lower-case captions and questions about shapes, motions and people (SigLIP-style text)."""
    sentences = []
    for index, (colour, shape) in enumerate(itertools.product(_COLOURS, _SHAPES)):
        motion = _MOTIONS[index % len(_MOTIONS)]
        place = _PLACES[index % len(_PLACES)]
        count = _NUMBER_WORDS[2 + index % 9]
        sentences += [
            f"a photo of a {colour} {shape}",
            f"the {colour} {shape} {motion}",
            f"describe the {colour} {shape}",
            f"there are {count} {colour} {shape}s {place}",
            f"what color is the {shape} {place}",
        ]
    for activity in _ACTIVITIES:
        sentences += [
            f"the person is {activity}",
            f"a man is {activity} in the video",
            f"a woman is {activity} outside",
            f"what is the person doing while {activity}",
        ]
    for animal_or_person, action, place in _SCENES:
        sentences += [
            f"a {animal_or_person} {action} in the {place}",
            f"what does the {animal_or_person} do in the {place}",
            f"describe the {place} where the {animal_or_person} is",
        ]
    sentences += ["what is the person doing", "what happens in the video", "how many objects are there"]
    sentences += [f"the number {word} comes after {prev}" for prev, word in zip(_NUMBER_WORDS, _NUMBER_WORDS[1:])]
    return sentences


def chat_corpus() -> list[str]:
    """Chat-style English with capitals, punctuation, digits and A-D options (Qwen2-style text)."""
    sentences = [
        caption[0].upper() + caption[1:] + ("?" if caption.startswith(("what", "how")) else ".")
        for caption in caption_corpus()
    ]
    sentences += [
        "You are a helpful assistant.",
        "The system sets the rules, the user asks a question and the assistant answers it.",
        "Hello! How can I help you today?",
        "Please describe the video in detail.",
        "Answer the question using a single word or phrase.",
        "Answer with the option's letter from the given choices directly.",
        "The answer is A.",
        "The answer is B.",
        "The answer is C.",
        "The answer is D.",
        "Sure, here is a short description of the image.",
        "I'm not sure, but it looks like a person walking.",
        "Thank you! Let me know if you have more questions.",
        "At the beginning of the video, the camera zooms in on a sunny street.",
        "Then the scene changes to a cloudy evening, and finally it becomes a rainy night.",
        "In the background, several buildings, trees and parked vehicles are visible.",
        "Before the dog jumps, it looks around carefully; afterwards, it runs towards the owner.",
        "The weather seems pleasant: warm sunlight, gentle breeze and clear skies.",
        "Which event happens first? Please explain your reasoning step by step.",
        "Could you summarize the main activities shown in these frames?",
        "Compared with the previous frame, the object moved slightly upwards.",
    ]
    letters = "ABCD"
    for index, shape in enumerate(_SHAPES * 3):
        options = [_COLOURS[(index + k) % len(_COLOURS)] for k in range(4)]
        option_lines = "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options))
        sentences.append(f"What color is the {shape}?\n{option_lines}\nAnswer: {letters[index % 4]}")
    for number in range(0, 1000, 7):
        sentences.append(f"There are {number} frames, {number % 60} seconds and {number // 3} objects.")
    sentences += [f"{letter}. {colour}" for letter, colour in zip("ABCD" * 3, _COLOURS)]
    return sentences


# ---- SigLIP -------------------------------------------------------------------------------------


def train_siglip_sentencepiece(vocab_size: int = SIGLIP_SP_VOCAB_SIZE) -> bytes:
    """A SentencePiece model with SigLIP's special ids (<pad>=0, </s>=1, <unk>=2, no <s>).

    BPE rather than SigLIP's unigram: on this small corpus unigram stops below 160 pieces and splits
    common words, while BPE keeps the corpus words whole.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(caption_corpus()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def siglip_tokenizer_config(max_length: int = SIGLIP_MAX_LENGTH) -> dict:
    """``tokenizer_config.json`` of a ``SiglipTokenizer`` (as its save_pretrained writes it).

    Written directly (the same file ``SiglipTokenizer.save_pretrained`` produces) so making the tiny
    folder needs only ``sentencepiece``.
    """

    def special(content: str) -> dict:
        return dict(content=content, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)

    return {
        "tokenizer_class": "SiglipTokenizer",
        "added_tokens_decoder": {"1": special("</s>"), "2": special("<unk>")},
        "eos_token": "</s>",
        "pad_token": "</s>",
        "unk_token": "<unk>",
        "do_lower_case": True,
        "model_max_length": max_length,
        "sp_model_kwargs": {},
    }


def tiny_siglip_config(vocab_size: int) -> SiglipConfig:
    """SigLIP config with the tiny dims; ``vocab_size`` must be the tokenizer's piece count."""
    text = dict(SIGLIP_TEXT_DIMS, vocab_size=vocab_size, pad_token_id=1, eos_token_id=1, bos_token_id=None)
    return SiglipConfig(text_config=text, vision_config=dict(SIGLIP_VISION_DIMS))


class _LibraryDefaultTokenIds(logging.Filter):
    """Drops transformers' token-id warning about ``SiglipTextConfig()``'s own defaults (bos 49406 and
    eos 49407 against its default vocabulary of 32,000): ``save_pretrained`` builds that default config to
    write the saved one as a difference from it, and the warning names no value of ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Model config: ") and "(between 0 and 31999), got 4940" in message)


def save_siglip(model: SiglipModel, out: Path) -> None:
    """``model.save_pretrained(out)`` with weight files readable by all; the library's warning about its
    own default text config (:class:`_LibraryDefaultTokenIds`) is not shown."""
    library = logging.getLogger("transformers.configuration_utils")  # the logger that warns
    quiet = _LibraryDefaultTokenIds()
    library.addFilter(quiet)
    try:
        model.save_pretrained(out)
    finally:
        library.removeFilter(quiet)
    readable_weight_files(out)


def make_tiny_siglip(out_dir: str | Path, seed: int = 0) -> Path:
    """Writes a complete tiny SigLIP folder (model, image processor, tokenizer) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sp_model = train_siglip_sentencepiece()
    (out / "spiece.model").write_bytes(sp_model)
    vocab_size = spm.SentencePieceProcessor(model_proto=sp_model).get_piece_size()
    (out / "tokenizer_config.json").write_text(json.dumps(siglip_tokenizer_config(), indent=2) + "\n")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(tiny_siglip_config(vocab_size))
    save_siglip(model, out)
    image_size = SIGLIP_VISION_DIMS["image_size"]
    SigLipImageProcessor(size=image_size).save_pretrained(out)
    logger.info("tiny SigLIP: text vocab %d, %d px images, seed %d", vocab_size, image_size, seed)
    return out


# ---- Qwen2 --------------------------------------------------------------------------------------


def train_qwen2_bpe(vocab_size: int = QWEN2_BPE_VOCAB_SIZE) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE ``(vocab, merges)`` trained with Qwen2's normaliser and pre-tokeniser."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(chat_corpus(), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in model["merges"]]
    return model["vocab"], merges


def build_qwen2_tokenizer() -> Qwen2Tokenizer:
    """Qwen2.5-style tokenizer: eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos/unk, ChatML."""
    vocab, merges = train_qwen2_bpe()
    if len(vocab) != QWEN2_BPE_VOCAB_SIZE:
        raise RuntimeError(f"the built-in corpus gave {len(vocab)} BPE tokens, expected {QWEN2_BPE_VOCAB_SIZE}")
    # In the model vocab so they take ids 1000.. in this order, as in Qwen2 (151643..).
    vocab.update({token: len(vocab) + k for k, token in enumerate(QWEN2_SPECIAL_TOKENS)})
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>"],
        model_max_length=QWEN2_MAX_LENGTH,
        padding_side="right",
        chat_template=CHATML_TEMPLATE,
    )


def tiny_qwen2_config(vocab_size: int, endoftext_id: int, im_end_id: int) -> Qwen2Config:
    """Qwen2 config with the tiny dims; ``vocab_size`` is the embedding row count."""
    return Qwen2Config(
        **QWEN2_DIMS,
        vocab_size=vocab_size,
        rope_parameters={"rope_type": "default", "rope_theta": QWEN2_ROPE_THETA},
        bos_token_id=endoftext_id,
        eos_token_id=im_end_id,
    )


def embedding_rows(num_tokens: int, multiple: int = QWEN2_EMBEDDING_MULTIPLE) -> int:
    return -(-num_tokens // multiple) * multiple


def make_tiny_qwen2(out_dir: str | Path, seed: int = 0) -> Path:
    """Writes a complete tiny Qwen2 folder (model, generation config, tokenizer) into ``out_dir``."""
    out = Path(out_dir)
    tokenizer = build_qwen2_tokenizer()
    endoftext_id, im_end_id = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    config = tiny_qwen2_config(embedding_rows(len(tokenizer)), endoftext_id, im_end_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    # Greedy by default so demo outputs are reproducible; stops on either end token like Qwen2.5.
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext_id, eos_token_id=[im_end_id, endoftext_id], pad_token_id=endoftext_id, do_sample=False
    )
    model.save_pretrained(out)
    readable_weight_files(out)
    tokenizer.save_pretrained(out)
    logger.info("tiny Qwen2: %d tokens, %d embedding rows, seed %d", len(tokenizer), config.vocab_size, seed)
    return out


# ---- LLaVA-Qwen ---------------------------------------------------------------------------------


def make_tiny_llava_qwen(
    out_dir: str | Path, llm_dir: str | Path, vision_tower_dir: str | Path, seed: int = 0
) -> Path:
    """Assembles the LLaVA model from a Qwen2 folder and a SigLIP folder into ``out_dir``."""
    # Imported here, not at the top: the SigLIP and Qwen2 parts must build without the LLaVA model code.
    from llava.model.builder import assemble_llava_qwen

    out = assemble_llava_qwen(
        Path(llm_dir).resolve(), Path(vision_tower_dir).resolve(), out_dir, mm_projector_type="mlp2x_gelu", seed=seed
    )
    return Path(out)


# ---- all parts ----------------------------------------------------------------------------------


def is_complete(folder: Path, part: str) -> bool:
    return all((folder / name).is_file() for name in _REQUIRED_FILES[part])


def make_all(
    out_dir: str | Path, seed: int = 0, force: bool = False, parts: tuple[str, ...] = PARTS
) -> dict[str, Path]:
    """Builds the requested parts under ``out_dir``, skipping complete ones unless ``force``.

    Returns:
        ``{part: folder}`` for each requested part, e.g. ``{"siglip": out_dir / "siglip-tiny", ...}``.
    """
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown parts {unknown}; choose from {list(PARTS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folders = {part: out / _DIRNAMES[part] for part in PARTS}
    builders = {
        "siglip": lambda tmp: make_tiny_siglip(tmp, seed=seed),
        "qwen2": lambda tmp: make_tiny_qwen2(tmp, seed=seed),
        "llava_qwen": lambda tmp: make_tiny_llava_qwen(tmp, folders["qwen2"], folders["siglip"], seed=seed),
    }
    for part in PARTS:
        if part not in parts:
            continue
        if is_complete(folders[part], part) and not force:
            logger.info("%s is complete; skipping it (--force rebuilds)", folders[part])
            continue
        if part == "llava_qwen":
            for needed in ("siglip", "qwen2"):
                if not is_complete(folders[needed], needed):
                    raise FileNotFoundError(f"{folders[needed]} is missing or incomplete; build part {needed!r} first")
        start = time.perf_counter()
        _build_in_place(folders[part], builders[part])
        logger.info("built %s in %.1f s", folders[part], time.perf_counter() - start)
    return {part: folders[part] for part in PARTS if part in parts}


def _build_in_place(folder: Path, build) -> None:
    """Runs ``build(tmp_folder)`` and renames the result to ``folder``, replacing an old one."""
    tmp = folder.parent / f".{folder.name}.{os.getpid()}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        build(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llava.toy.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder that receives the checkpoint folders")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--force", action="store_true", help="rebuild parts that already exist")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to build (default all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for part, folder in make_all(args.out, seed=args.seed, force=args.force, parts=tuple(args.parts)).items():
        print(f"{part}\t{folder}")


if __name__ == "__main__":
    main()
