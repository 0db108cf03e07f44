"""Training data: LLaVA annotation files -> tokenised samples with their images or video frames.

``--data_path`` takes one of

* a ``.json`` list (or ``.jsonl``, one record per line) of LLaVA records::

    {"id": ..., "image": "a.jpg" | ["a.jpg", "b.jpg"] | "video": "clip.mp4",
     "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]}

* a brace list ``dir/{a,b}.json`` (loads ``dir/a.json`` and ``dir/b.json``);
* a ``.yaml`` mixture: ``datasets: [{json_path, sampling_strategy, data_root?}, ...]`` where
  ``sampling_strategy`` is ``all``, ``first:N``, ``end:N`` or ``random:N`` and N may be ``K%``.
  ``random`` is seeded by ``--seed`` (upstream shuffles with the global RNG).

Media paths resolve as ``{image_folder|video_folder}/{data_root}/{path}``; a ``<video>`` tag is read as
``<image>`` (LLaVA uses one placeholder for both).

Bad data never crashes a run half-way and is never silently replaced:

* structural problems found at load time (malformed record, corrupt JSON line, placeholders that
  do not match the media, a conversation without an answer, an empty instruction for an
  instruction-conditioned projector, a bad or missing plugin field) drop the record, counted by reason;
* problems found when a sample is read (missing, empty or undecodable file, oversized image, text
  longer than ``model_max_length``) skip to the next sample, counted by reason; the counts travel
  with the batches to the trainer, which logs a summary and writes ``data_report.json``;
* ``--strict_data`` turns every one of these into an error naming the file and the reason.

With an instruction-conditioned projector each multi-turn media sample is expanded into one sample
per answer, supervised on that answer only and conditioned on its own question; text-only samples
are not expanded.

Per-sample fields a plugin declares (:class:`llava.plugin.SampleField`, e.g. ``"instances": [...]``)
and the projector reads (``StructuredProjector.sample_fields``) are parsed from each record at load
time and handed out once per visual item (``sample["fields"]``, batched as ``sample_fields``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.mm_utils import (
    ImageConfig,
    ImageTooLargeError,
    frames_to_decode,
    open_rgb_image,
    pixel_size,
    process_images,
    process_video_frames,
)
from llava.plugin import SampleField
from llava.utils import VideoDecodeError, inside_root
from llava.video import DecodedVideoCache

from .preprocess import preprocess_conversation, turn_role, turn_text

logger = logging.getLogger(__name__)

VIDEO_TAG = "<video>"
DATA_REPORT_NAME = "data_report.json"
_BRACES = re.compile(r"^(?P<prefix>.*)\{(?P<names>[^{}]+)\}(?P<suffix>\.jsonl?)$")
#: Consecutive bad samples after which ``__getitem__`` gives up: the data, not a sample, is broken.
MAX_CONSECUTIVE_SKIPS = 32


class UnusableDataError(RuntimeError):
    """The data as a whole cannot be trained on (a mixture part whose files are all missing, a long run
    of unreadable samples): training stops cleanly, with ``data_report.json`` written."""


class DataError(Exception):
    """A sample that cannot be used: ``kind`` (a short reason key), the file, and the reason."""

    def __init__(self, kind: str, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.kind, self.path, self.reason = kind, path, reason


# --------------------------------------------------------------------------- the report


@dataclass
class DataReport:
    """Counts of dropped/skipped samples (``skipped``) and of samples used with a change that is
    worth knowing (``notes``: truncated text, fewer frames than asked, PyAV fallback), by reason,
    plus the first examples of each.

    Counts are of distinct samples, not of reads: an event's message names the sample (record and
    file), and a message already counted (the same bad file met again in a later epoch, on another
    rank or by another worker) is not counted twice; ``seen`` keeps a short digest of each.
    """

    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5
    seen: set[str] = field(default_factory=set)

    def add(self, event: tuple[str, str, str]) -> None:
        """``event`` is ``("skip" | "note", kind, message)``."""
        what, kind, message = event
        key = _event_key(what, kind, message)
        if key in self.seen:
            return
        self.seen.add(key)
        (self.skipped if what == "skip" else self.notes)[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < self.max_examples:
            examples.append(message)

    def merge(self, other: DataReport | dict) -> None:
        other = other if isinstance(other, DataReport) else DataReport.from_dict(other)
        if other.seen or not (other.skipped or other.notes):
            shared = self.seen & other.seen  # counted on both sides: subtract once per kind
            self.seen |= other.seen
        else:  # a report without digests (written before they were kept): its counts as they are
            shared = set()
        self.skipped.update(other.skipped)
        self.notes.update(other.notes)
        for key in shared:
            what, kind = key.split("|", 2)[:2]
            counts = self.skipped if what == "skip" else self.notes
            counts[kind] -= 1
        for kind, examples in other.examples.items():
            mine = self.examples.setdefault(kind, [])
            mine += [e for e in examples if e not in mine][: self.max_examples - len(mine)]

    def to_dict(self) -> dict:
        return {"skipped": dict(self.skipped), "notes": dict(self.notes), "examples": self.examples,
                "total_skipped": sum(self.skipped.values()), "seen": sorted(self.seen)}

    @classmethod
    def from_dict(cls, data: dict) -> DataReport:
        return cls(Counter(data.get("skipped", {})), Counter(data.get("notes", {})),
                   {k: list(v) for k, v in data.get("examples", {}).items()}, seen=set(data.get("seen", [])))

    def summary(self) -> str:
        if not self.skipped and not self.notes:
            return "data report: every sample was used as written"
        lines = [f"data report: {sum(self.skipped.values())} sample(s) skipped, "
                 f"{sum(self.notes.values())} used with a note"]
        for label, counts in (("skipped", self.skipped), ("note", self.notes)):
            for kind, count in counts.most_common():
                lines.append(f"  {label} {kind}: {count}  e.g. {self.examples.get(kind, [''])[0]}")
        return "\n".join(lines)


def _event_key(what: str, kind: str, message: str) -> str:
    """``what|kind|digest of the message``: the identity of one sample's event, compact enough to keep
    for every bad sample of a long run."""
    return f"{what}|{kind}|{hashlib.sha1(message.encode('utf-8', 'replace')).hexdigest()[:16]}"


# --------------------------------------------------------------------------- annotation files


def expand_data_path(data_path: str) -> list[str]:
    """``dir/{a,b}.json`` -> ``[dir/a.json, dir/b.json]``; any other path -> ``[path]``."""
    match = _BRACES.match(data_path)
    if not match:
        return [data_path]
    names = [n.strip() for n in match["names"].split(",") if n.strip()]
    return [f"{match['prefix']}{name}{match['suffix']}" for name in names]


def _read_json_records(path: str, report: DataReport, strict: bool) -> list[dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    records: list[dict] = []
    if path.endswith(".jsonl"):
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    _drop(report, strict, "corrupt_json_line", f"{path}:{number}",
                          f"not UTF-8 text (byte {err.start} of the line)")
                    continue
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    _drop(report, strict, "corrupt_json_line", f"{path}:{number}", f"not valid JSON ({err.msg})")
                    continue
                records.append(_tag(record, f"{path}:{number}"))
        return records
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start} of the file)") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return [_tag(record, f"{path}[{i}]") for i, record in enumerate(data)]


def _source_file(where: str) -> str:
    """The annotation file of a record location (``file:line`` or ``file[index]``)."""
    return re.sub(r"(:\d+|\[\d+\])$", "", where)


def _tag(record: Any, where: str) -> dict:
    return {"_where": where, "_record": record}


def _sample_count(spec: str, total: int, where: str) -> int:
    text = spec.strip()
    try:
        if text.endswith("%"):
            return math.ceil(float(text[:-1]) * total / 100)
        return int(text)
    except ValueError:
        raise ValueError(f"{where}: sampling count {spec!r} is neither N nor K%") from None


def apply_sampling_strategy(records: list, strategy: str, rng: random.Random, where: str) -> list:
    """``all`` | ``first:N`` | ``end:N`` | ``random:N`` (N may be ``K%``)."""
    strategy = (strategy or "all").strip()
    if strategy == "all":
        return records
    kind, _, count = strategy.partition(":")
    if kind not in ("first", "end", "random") or not count:
        raise ValueError(f"{where}: sampling_strategy {strategy!r} is not all, first:N, end:N or random:N")
    n = min(_sample_count(count, len(records), where), len(records))
    if kind == "first":
        return records[:n]
    if kind == "end":
        return records[len(records) - n:]
    picked = list(records)
    rng.shuffle(picked)
    return picked[:n]


def read_annotations(data_path: str, report: DataReport, strict: bool = False, seed: int = 0) -> list[dict]:
    """Every record named by ``data_path`` (module docstring), each wrapped as
    ``{"_where": "file:line", "_record": record, "_data_root": ...}``."""
    if data_path.endswith((".yaml", ".yml")):
        import yaml

        if not os.path.isfile(data_path):
            raise FileNotFoundError(f"data mixture file not found: {data_path}")
        with open(data_path, encoding="utf-8") as handle:
            try:
                mixture = yaml.safe_load(handle)
            except yaml.YAMLError as err:
                raise ValueError(f"{data_path}: not valid YAML ({err})") from None
        entries = mixture.get("datasets") if isinstance(mixture, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{data_path}: expected a top-level 'datasets:' list")
        records: list[dict] = []
        for index, entry in enumerate(entries):
            where = f"{data_path} datasets[{index}]"
            if not isinstance(entry, dict) or "json_path" not in entry:
                raise ValueError(f"{where}: each entry needs a json_path")
            path = str(entry["json_path"])
            if not os.path.isabs(path) and not os.path.exists(path):
                beside = os.path.join(os.path.dirname(data_path), path)
                path = beside if os.path.exists(beside) else path
            part = _read_json_records(path, report, strict)
            rng = random.Random(f"{seed}:{index}:{path}")
            part = apply_sampling_strategy(part, str(entry.get("sampling_strategy", "all")), rng, where)
            for item in part:
                item["_data_root"] = entry.get("data_root") or ""
            logger.info("%s: %d records from %s (%s)", data_path, len(part), path, entry.get("sampling_strategy", "all"))
            records += part
        return records
    records = []
    for path in expand_data_path(data_path):
        records += _read_json_records(path, report, strict)
    return records


def _drop(report: DataReport, strict: bool, kind: str, where: str, reason: str) -> None:
    if strict:
        raise DataError(kind, where, reason + " (--strict_data)")
    report.add(("skip", kind, f"{where}: {reason}"))


# --------------------------------------------------------------------------- records -> samples


@dataclass(frozen=True)
class SampleSpec:
    """One training sample: a checked record, the turns to train on, and the media to load."""

    where: str
    conversations: tuple[dict, ...]
    media: tuple[str, ...]  # resolved paths
    modality: str  # "image" | "video" | "text"
    instruction: str
    supervise: str  # "all" | "last"
    record_id: str
    fields: dict = field(default_factory=dict)  # plugin fields, parsed


def _check_record(item: dict, folders: dict[str, str], allow_outside_root: bool = False
                  ) -> tuple[list[dict], list[str], str]:
    """Normalised turns, resolved media paths and modality of a record, or ``DataError``."""
    record, where = item["_record"], item["_where"]
    if not isinstance(record, dict):
        raise DataError("malformed_record", where, f"a record must be an object, got {type(record).__name__}")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError("malformed_record", where, "no 'conversations' list")
    try:
        roles = [turn_role(t) for t in turns]
        texts = [turn_text(t) for t in turns]
    except (ValueError, AttributeError) as err:
        raise DataError("malformed_record", where, f"bad turn ({err})") from None
    if roles[0] == 1:  # upstream drops a leading assistant turn
        roles, texts = roles[1:], texts[1:]
    if not roles or roles != [i % 2 for i in range(len(roles))]:
        raise DataError("malformed_record", where, f"turns must alternate human/gpt, got {roles}")
    if len(roles) % 2:
        raise DataError("no_answer", where, "the conversation ends with a human turn that has no answer")
    texts = [t.replace(VIDEO_TAG, DEFAULT_IMAGE_TOKEN) for t in texts]
    conversations = [{"from": "human" if r == 0 else "gpt", "value": t} for r, t in zip(roles, texts)]

    if "image" in record and "video" in record:
        raise DataError("malformed_record", where, "a record has either 'image' or 'video', not both")
    root = item.get("_data_root") or ""
    if "video" in record:
        modality, names = "video", [record["video"]]
    elif "image" in record:
        modality, names = "image", record["image"] if isinstance(record["image"], list) else [record["image"]]
    else:
        modality, names = "text", []
    if any(not isinstance(n, str) or not n for n in names):
        raise DataError("malformed_record", where, f"media paths must be non-empty strings, got {names!r}")
    folder = folders.get(modality) or ""
    media = [os.path.join(folder, root, n) for n in names]
    if not allow_outside_root:
        for name, path in zip(names, media):
            if not inside_root(path, os.path.join(folder, root)):
                raise DataError("outside_data_root", where, f"media path {name!r} leaves its data root "
                                f"{os.path.join(folder, root) or '.'!r} (--allow_outside_data_root to permit)")

    placeholders = sum(t.count(DEFAULT_IMAGE_TOKEN) for t, r in zip(texts, roles) if r == 0)
    answers_with_tag = sum(t.count(DEFAULT_IMAGE_TOKEN) for t, r in zip(texts, roles) if r == 1)
    if placeholders != len(media) or answers_with_tag:
        what = f"{len(media)} {modality}(s)" if media else "no image or video"
        raise DataError("placeholder_mismatch", where,
                        f"{placeholders} <image>/<video> placeholder(s) in human turns for {what}")
    return conversations, media, modality


def _read_fields(record: dict, where: str, specs: list[SampleField]) -> dict:
    """The plugin fields of a record, parsed, or ``DataError`` naming the field and the reason."""
    values = {}
    for spec in specs:
        if spec.name not in record:
            if spec.required:
                raise DataError(f"missing_{spec.name}", where, f"no {spec.name!r} field, which the projector needs")
            values[spec.name] = spec.default()
            continue
        try:
            values[spec.name] = spec.parse(record[spec.name])
        except (ValueError, TypeError) as err:
            raise DataError(f"bad_{spec.name}", where, f"field {spec.name!r}: {err}") from None
    return values


def build_sample_specs(
    items: list[dict],
    folders: dict[str, str],
    report: DataReport,
    strict: bool,
    per_turn: bool,
    instruction_cleaner: Callable[[str], str] | None,
    fields: list[SampleField] = (),
    allow_outside_root: bool = False,
) -> list[SampleSpec]:
    """Checks every record, reads its plugin ``fields`` and, with ``per_turn`` (an
    instruction-conditioned projector), expands multi-turn media samples (module docstring)."""
    clean = instruction_cleaner or (lambda text: text.replace(DEFAULT_IMAGE_TOKEN, "").strip())
    specs: list[SampleSpec] = []
    for index, item in enumerate(items):
        try:
            conversations, media, modality = _check_record(item, folders, allow_outside_root)
            values = _read_fields(item["_record"], item["_where"], fields)
        except DataError as err:
            _drop(report, strict, err.kind, err.path, err.reason)
            continue
        record_id = str(item["_record"].get("id", index))
        expand = per_turn and modality != "text"
        ends = range(2, len(conversations) + 1, 2) if expand else [len(conversations)]
        for end in ends:
            turns = tuple(conversations[:end])
            instruction = clean(turns[-2]["value"])
            if per_turn and modality != "text" and not instruction:
                _drop(report, strict, "empty_instruction", item["_where"],
                      f"the question of turn {end // 2} is empty after cleaning; the projector needs one")
                continue
            specs.append(SampleSpec(item["_where"], turns, tuple(media), modality, instruction,
                                    "last" if expand else "all", record_id, values))
    return specs


# --------------------------------------------------------------------------- media


def check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError("missing_file", path, "file not found")
    if os.path.isdir(path):
        raise DataError("missing_file", path, "is a directory, not a file")
    if os.path.getsize(path) == 0:
        raise DataError("empty_file", path, "file is empty (0 bytes)")


def load_image(path: str, max_pixels: int) -> Image.Image:
    """An RGB image (:func:`llava.mm_utils.to_rgb`: 16-bit scaled, transparency on white), or
    ``DataError``; the pixel count is checked from the header, before decoding."""
    check_file(path)
    try:
        return open_rgb_image(path, max_pixels)
    except ImageTooLargeError as err:
        raise DataError("image_too_large", path, str(err).removeprefix(f"{path}: ") + " (--max_image_pixels)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError("undecodable_image", path, f"cannot decode image ({err})") from None


# --------------------------------------------------------------------------- the dataset


class LazySupervisedDataset(Dataset):
    """LLaVA's training dataset (upstream name and constructor) with counted skips.

    Each item is ``{"input_ids", "labels", "image": [(tensor (T,3,S,S), size, modality), ...],
    "instructions": [str per visual item], "fields": {name: [value per visual item]}, "id",
    "data_events": [(what, kind, message), ...]}``. ``fields`` are the plugin fields to read.
    """

    def __init__(self, data_path: str, tokenizer, data_args, instruction_cleaner=None,
                 fields: list[SampleField] = ()):
        super().__init__()
        self.tokenizer = tokenizer
        self.data_args = data_args
        self.strict = bool(getattr(data_args, "strict_data", False))
        self.load_report = DataReport()
        items = read_annotations(data_path, self.load_report, self.strict, seed=getattr(data_args, "seed", 0))
        folders = {"image": data_args.image_folder, "video": data_args.video_folder or data_args.image_folder}
        self.per_turn = bool(getattr(data_args, "needs_instructions", False))
        self.specs = build_sample_specs(items, folders, self.load_report, self.strict, self.per_turn,
                                        instruction_cleaner, list(fields),
                                        bool(getattr(data_args, "allow_outside_data_root", False)))
        if not self.specs:
            raise ValueError(f"{data_path}: no usable training sample ({self.load_report.summary()})")
        logger.info("%s: %d records -> %d samples%s", data_path, len(items), len(self.specs),
                    " (instruction-conditioned: one per answer)" if self.per_turn else "")
        if self.load_report.skipped:
            logger.warning("%s", self.load_report.summary())
        self._bad: dict[int, tuple[str, str, str]] = {}  # positions found unreadable, and why
        cache_mb = int(getattr(data_args, "video_cache_mb", 0) or 0)
        if cache_mb < 0:
            raise ValueError(f"--video_cache_mb {cache_mb}: must be >= 0 (0 keeps no decoded clip)")
        self._videos = DecodedVideoCache(cache_mb * 2**20)

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def lengths(self) -> list[int]:
        """Word count (+128 per sample with media), upstream's length proxy."""
        return [self._words(s) + (128 if s.media else 0) for s in self.specs]

    @property
    def modality_lengths(self) -> list[int]:
        """Word count, negative for text-only samples (upstream's modality grouping key)."""
        early = bool(getattr(self.data_args, "early_mix_text", False))
        return [self._words(s) if (s.media or early) else -self._words(s) for s in self.specs]

    @staticmethod
    def _words(spec: SampleSpec) -> int:
        return max(1, sum(len(t["value"].split()) for t in spec.conversations))

    def __getitem__(self, index: int) -> dict:
        """Sample ``index``; when it cannot be read, a replacement drawn uniformly from the other
        samples (deterministic per index and attempt, so a bad file's neighbour is not trained twice
        in its place). A sample found bad is remembered and not read again; after
        ``MAX_CONSECUTIVE_SKIPS`` bad draws in a row the data, not a sample, is broken:
        :class:`UnusableDataError`."""
        events: list[tuple[str, str, str]] = []
        for attempt in range(MAX_CONSECUTIVE_SKIPS):
            position = index if attempt == 0 else self._replacement(index, attempt)
            known = self._bad.get(position)
            if known is not None:
                events.append(known)
                continue
            try:
                sample = self.get_sample(position, events)
            except DataError as err:
                if self.strict:
                    raise ValueError(f"{err.path}: {err.reason} (--strict_data)") from None
                event = ("skip", err.kind, f"{err.path}: {err.reason} (record {self.specs[position].where})")
                self._bad[position] = event
                events.append(event)
                logger.warning("skipping sample %d (%s): %s", position, err.kind, err)
                continue
            sample["data_events"] = events
            return sample
        examples = "; ".join(message for _, _, message in events[:3])
        raise UnusableDataError(
            f"{MAX_CONSECUTIVE_SKIPS} samples in a row (from index {index}) could not be read; the data or "
            f"its folders are wrong, e.g. {examples}")

    def _replacement(self, index: int, attempt: int) -> int:
        if len(self.specs) == 1:
            return index
        draw = random.Random(f"{index}:{attempt}").randrange(len(self.specs) - 1)
        return draw + (draw >= index)  # any sample but ``index`` itself

    def check_media_roots(self, first: int = 8) -> None:
        """Before training: reads the headers of the first ``first`` media files of every annotation
        file (each mixture part); a part none of whose sampled files exists or is non-empty has a wrong
        root or folder, and is an :class:`UnusableDataError` naming the part and the paths tried."""
        parts: dict[str, list[SampleSpec]] = {}
        for spec in self.specs:
            if spec.media:
                parts.setdefault(_source_file(spec.where), []).append(spec)
        for source, specs in parts.items():
            problems = []
            for spec in specs[:first]:
                try:
                    check_file(spec.media[0])
                except DataError as err:
                    problems.append(f"{err.path}: {err.reason}")
                else:
                    break
            else:
                self.load_report.add(("skip", "unreadable_part", f"{source}: {problems[0]}"))
                raise UnusableDataError(
                    f"{source}: none of its first {len(problems)} media files can be read, e.g. {problems[0]} "
                    f"(check data_root in the mixture, --image_folder and --video_folder)")

    # ------------------------------------------------------------------ one sample

    def get_sample(self, position: int, events: list) -> dict:
        spec = self.specs[position]
        args = self.data_args
        conversations = [dict(t) for t in spec.conversations]
        if spec.modality == "video":
            pixels, video = self._video(spec.media[0], events)
            if getattr(args, "add_time_instruction", False):
                conversations[0]["value"] = _with_time(conversations[0]["value"], video)
            items = [(pixels, pixel_size(pixels), "video")]
        elif spec.modality == "image":
            images = [load_image(p, args.max_image_pixels) for p in spec.media]
            items = self._images(images)
        else:
            items = []

        input_ids, labels = preprocess_conversation(
            conversations, self.tokenizer, self.version, supervise=spec.supervise,
            label_mode=getattr(args, "label_mode", "answer"),
        )
        input_ids, labels = self._truncate(spec, input_ids, labels, events)

        instructions = [spec.instruction] * len(items)
        if not items and getattr(args, "is_multimodal", False):
            side = self._crop_side()
            items = [(torch.zeros(1, 3, side, side), (side, side), "text")]
            instructions = [""]
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "image": items,
            "instructions": instructions,
            "fields": {name: [value] * len(items) for name, value in spec.fields.items()},
            "id": spec.record_id,
        }

    @property
    def version(self) -> str:
        return getattr(self.data_args, "version", None) or "qwen_1_5"

    def _crop_side(self) -> int:
        processor = self.data_args.image_processor
        crop = getattr(processor, "crop_size", None) or getattr(processor, "size", None)
        if isinstance(crop, dict):
            return int(crop.get("height", crop.get("shortest_edge")))
        return int(crop)

    def _images(self, images: list[Image.Image]) -> list[tuple]:
        processor = self.data_args.image_processor
        aspect = self.data_args.image_aspect_ratio if len(images) == 1 else "pad"
        config = ImageConfig(aspect, getattr(self.data_args, "image_grid_pinpoints", None))
        items = []
        for image in images:
            pixels = process_images([image], processor, config)
            pixels = pixels[0]  # one image: the first of a stacked tensor or of a list
            if pixels.ndim == 3:
                pixels = pixels.unsqueeze(0)
            items.append((pixels, image.size, "image"))
        return items

    def _video(self, path: str, events: list) -> tuple[torch.Tensor, Any]:
        check_file(path)
        args = self.data_args
        num_frames = frames_to_decode(args.image_processor, getattr(args, "num_frames", None))
        try:
            if num_frames:
                video = self._videos.load(path, num_frames=num_frames, repeat_frames=False)
            else:
                video = self._videos.load(path, fps=args.video_fps or None, frames_upbound=args.frames_upbound or 0,
                                          force_sample=bool(args.force_sample))
        except VideoDecodeError as err:
            raise DataError("undecodable_video", path, err.reason) from None
        if num_frames and len(video.frame_indices) < num_frames:
            events.append(("note", "fewer_frames",
                           f"{path}: {video.total_frames} frame(s), {num_frames} requested; each used once"))
        return process_video_frames(video.frames, args.image_processor, args.image_aspect_ratio), video

    def _truncate(self, spec: SampleSpec, input_ids: list[int], labels: list[int], events: list):
        limit = self.tokenizer.model_max_length
        if len(input_ids) <= limit:
            return input_ids, labels
        kept_ids, kept_labels = input_ids[:limit], labels[:limit]
        if kept_ids.count(IMAGE_TOKEN_INDEX) != input_ids.count(IMAGE_TOKEN_INDEX):
            raise DataError("too_long", spec.where, f"{len(input_ids)} tokens > model_max_length={limit} "
                            f"and truncation would cut an <image> placeholder")
        if all(label == IGNORE_INDEX for label in kept_labels):
            raise DataError("too_long", spec.where, f"{len(input_ids)} tokens > model_max_length={limit} "
                            f"and no supervised token would remain")
        events.append(("note", "truncated", f"{spec.where}: {len(input_ids)} tokens cut to {limit}"))
        return kept_ids, kept_labels


def _with_time(first_turn: str, video) -> str:
    """LLaVA-Video's time instruction (its wording, including the missing space before "Please")."""
    sentence = (f"The video lasts for {video.duration:.2f} seconds, and {len(video.frame_indices)} frames are "
                f"uniformly sampled from it. These frames are located at {video.frame_time_str}."
                f"Please answer the following questions related to this video.")
    rest = first_turn.replace(DEFAULT_IMAGE_TOKEN, "").strip()
    return f"{DEFAULT_IMAGE_TOKEN}\n{sentence}\n{rest}"


# --------------------------------------------------------------------------- collation


@dataclass
class DataCollatorForSupervisedDataset:
    """Pads a list of samples into a batch (upstream name and keys).

    ``images`` is the flat list of visual items of the batch in sample order (no stacking: items
    differ in frame count), with ``image_sizes``, ``modalities`` and one ``instructions`` entry each,
    and ``sample_fields``: ``{name: [value per item]}`` when the samples carry plugin fields.
    ``data_events`` carries the samples' skip/note events to the trainer (which removes it).
    """

    tokenizer: Any

    def __call__(self, instances: list[dict]) -> dict:
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        limit = self.tokenizer.model_max_length
        ids = [inst["input_ids"][:limit] for inst in instances]
        labels = [inst["labels"][:limit] for inst in instances]
        longest = max(len(x) for x in ids)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
        label_batch = torch.full((len(ids), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), longest), dtype=torch.bool)
        for row, (x, y) in enumerate(zip(ids, labels)):
            span = slice(longest - len(x), longest) if left else slice(0, len(x))
            input_ids[row, span], label_batch[row, span], attention_mask[row, span] = x, y, True
        batch = {"input_ids": input_ids, "labels": label_batch, "attention_mask": attention_mask}
        items = [item for inst in instances for item in inst.get("image", [])]
        if items:
            batch["images"] = [item[0] for item in items]
            batch["image_sizes"] = [item[1] for item in items]
            batch["modalities"] = [item[2] for item in items]
            batch["instructions"] = [text for inst in instances for text in inst.get("instructions", [])]
            names = sorted({name for inst in instances for name in inst.get("fields", {})})
            if names:
                batch["sample_fields"] = {name: [v for inst in instances for v in inst["fields"][name]] for name in names}
        batch["data_events"] = [event for inst in instances for event in inst.get("data_events", [])]
        return batch


def make_supervised_data_module(tokenizer, data_args, instruction_cleaner=None, fields=()) -> dict:
    """Upstream's entry point: ``{"train_dataset", "eval_dataset", "data_collator"}``."""
    dataset = LazySupervisedDataset(data_args.data_path, tokenizer, data_args, instruction_cleaner, fields)
    return {"train_dataset": dataset, "eval_dataset": None,
            "data_collator": DataCollatorForSupervisedDataset(tokenizer)}


__all__ = [
    "DataCollatorForSupervisedDataset", "DataError", "DataReport", "LazySupervisedDataset", "SampleSpec",
    "UnusableDataError",
    "apply_sampling_strategy", "build_sample_specs", "expand_data_path", "load_image",
    "make_supervised_data_module", "read_annotations",
]
