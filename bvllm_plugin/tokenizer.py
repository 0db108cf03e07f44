"""The Q-Formers' text side: a BERT WordPiece tokenizer plus InstructBLIP's ``[DEC]`` token.

At real scale the tokenizer is read from a folder (``bert-base-uncased``: 30522 tokens, 30523 with
``[DEC]``), named by ``--bvllm_qformer_tokenizer``. ``"tiny"`` instead builds a small uncased WordPiece
vocabulary in code (letters, digits, punctuation, their ``##`` continuations and a few hundred common
words), so tests and toy runs need no download. An exported model carries its tokenizer in a subfolder.

Texts are tokenised as the public code does: ``[CLS] text [SEP]``, padded to the longest in the batch,
truncated from the left to ``max_length`` tokens.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

TINY = "tiny"
DEC_TOKEN = "[DEC]"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Whole words of the tiny vocabulary (the synthetic data's and the benchmarks' common words).
TINY_WORDS = (
    "a an the is are was were be been what which who where when why how many much does do did this that these "
    "those it its of in on at to from by with for and or not no yes there here video image frame frames clip "
    "describe tell me about happen happens happening doing shown show color colour red green blue yellow white "
    "black orange purple square circle triangle shape object objects moves moving move left right up down top "
    "bottom first last after before then during person man woman people count number one two three four five "
    "answer question option letter best following select choose between small large big begin end middle"
).split()


def build_tiny_tokenizer():
    """An uncased BERT WordPiece tokenizer with a small in-code vocabulary, plus ``[DEC]``."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertTokenizerFast

    symbols = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab_list = list(SPECIAL_TOKENS) + symbols + [f"##{s}" for s in string.ascii_lowercase + string.digits]
    vocab_list += [w for w in dict.fromkeys(TINY_WORDS) if w not in vocab_list]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    core = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    core.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = BertTokenizerFast(tokenizer_object=core, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                  cls_token="[CLS]", mask_token="[MASK]", do_lower_case=True)
    return _with_dec(tokenizer)


def _with_dec(tokenizer):
    """The code's ``add_special_tokens({"bos_token": "[DEC]"})`` (a no-op when present), left truncation."""
    if DEC_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"bos_token": DEC_TOKEN})
    tokenizer.truncation_side = "left"
    tokenizer.padding_side = "right"
    return tokenizer


def load_qformer_tokenizer(source: str | Path):
    """``"tiny"`` (:func:`build_tiny_tokenizer`) or a BERT tokenizer folder (read offline)."""
    if str(source) == TINY:
        return build_tiny_tokenizer()
    folder = Path(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"B-VLLM Q-Former tokenizer folder {folder} does not exist (--bvllm_qformer_tokenizer: "
                                f"a BERT tokenizer folder such as bert-base-uncased, or '{TINY}')")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"B-VLLM Q-Former tokenizer folder {folder}: cannot read a tokenizer ({err})") from None
    return _with_dec(tokenizer)


class QFormerText:
    """Tokenises the instructions for both Q-Formers (one tokenizer: the code's two are identical)."""

    def __init__(self, source: str | Path, max_length: int):
        self.source = str(source)
        self.max_length = max_length
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_qformer_tokenizer(self.source)
        return self._tokenizer

    def set_source(self, source: str | Path) -> None:
        self.source, self._tokenizer = str(source), None

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __call__(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L)`` ids and ``(B, L)`` attention mask (1 = token), ``L`` the longest after truncation."""
        encoded = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)


__all__ = ["DEC_TOKEN", "TINY", "QFormerText", "build_tiny_tokenizer", "load_qformer_tokenizer"]
