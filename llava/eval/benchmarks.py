"""Video benchmarks: their released file layouts mapped to :class:`VideoQuestion`, and their prompts.

Each :class:`Benchmark` knows how to read its question files (and the separate ground-truth file some
benchmarks ship) and how to render the LLM prompt in two styles (:data:`PROMPT_STYLES`):

* ``release``: the prompts of the evaluation scripts released with video LLMs built on VideoLLaMA2's
  code, the prompts behind their reported numbers (Video-MME and MVBench word for word as
  VideoLLaMA2's own, EgoSchema and MLVU written the same way); open-ended benchmarks get the bare
  question;
* ``lmms``: lmms-eval's default prompts for the same task (what ``--model llava_onevision`` sends).

Plugins may add other names for a style (:func:`register_prompt_style_alias`); every style name read
goes through :func:`resolve_prompt_style`. Whatever the style, only the bare question goes to the
instruction path.

=====================  ===========================================  ====================================
benchmark              ``--question-file`` (``--gt-file``)          videos under ``--video-folder``
=====================  ===========================================  ====================================
videomme               parquet / JSON rows (lmms-eval/Video-MME) or  ``<videoID>.mp4`` (.mkv ...)
                       the per-video JSON with ``questions`` lists  subtitles: ``<videoID>.srt``
mvbench                the ``json/`` folder (one file per task)     ``<task folder>/<video>``; frame
                                                                    folders for episodic reasoning
egoschema              ``questions.json`` (``subset_answers.json``)  ``<q_uid>.mp4``
mlvu                   the ``json/`` folder (``1_plotQA.json`` ...)  ``<n_type>/<video>``
activitynet            ``test_q.json`` (``test_a.json``)            ``v_<video_name>.mp4`` (.webm ...)
vcgpt_generic          ``generic_qa.json`` (Q, A, video_name)       ``<video_name>.mp4``
vcgpt_temporal         ``temporal_qa.json``                         ``<video_name>.mp4``
vcgpt_consistency      ``consistency_qa.json`` (Q1, Q2, A)           ``<video_name>.mp4``
=====================  ===========================================  ====================================
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from .questions import (
    LETTERS,
    QuestionFileError,
    VideoQuestion,
    check_unique_ids,
    field,
    read_json_file,
    read_rows,
)

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov")
PROMPT_STYLES = ("release", "lmms")
DEFAULT_PROMPT_STYLE = "release"

PromptFn = Callable[[VideoQuestion, "str | None"], str]
Loader = Callable[[Path, "Path | None"], "list[VideoQuestion]"]

# alias -> style; filled by plugins (their entry points run when the plugin loader runs)
_PROMPT_STYLE_ALIASES: dict[str, str] = {}


class UnknownPromptStyleError(ValueError):
    """A prompt style name that is neither a style nor a registered alias."""


def register_prompt_style_alias(alias: str, style: str) -> None:
    """Lets ``alias`` name the prompt style ``style`` (e.g. the name a method's users know it by).

    Registering the same pair again is a no-op; an alias may not shadow a style nor point at two.
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style alias {alias!r}: {style!r} is not a prompt style ({', '.join(PROMPT_STYLES)})")
    if alias in PROMPT_STYLES:
        raise ValueError(f"prompt style alias {alias!r} would shadow the style of that name")
    current = _PROMPT_STYLE_ALIASES.get(alias)
    if current is not None and current != style:
        raise ValueError(f"prompt style alias {alias!r} already names {current!r}, not {style!r}")
    _PROMPT_STYLE_ALIASES[alias] = style


def prompt_style_aliases() -> dict[str, str]:
    """Registered aliases, ``{alias: style}``."""
    return dict(_PROMPT_STYLE_ALIASES)


def resolve_prompt_style(name: str) -> str:
    """The style ``name`` denotes: itself if it is a style, else the style of that alias.

    Aliases come from plugins: load them first (the evaluation commands do).
    """
    if name in PROMPT_STYLES:
        return name
    if name in _PROMPT_STYLE_ALIASES:
        return _PROMPT_STYLE_ALIASES[name]
    aliases = ", ".join(f"{a} -> {s}" for a, s in sorted(_PROMPT_STYLE_ALIASES.items())) or "none registered"
    raise UnknownPromptStyleError(f"unknown prompt style {name!r}; styles: {', '.join(PROMPT_STYLES)}; "
                                  f"aliases: {aliases}")


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """How to read one benchmark and prompt for it.

    Attributes:
        kind: ``"mcqa"`` (scored by letter extraction) or ``"oqa"`` (scored by an LLM judge).
        load: ``(question_file, gt_file or None) -> questions``.
        prompts: style (of :data:`PROMPT_STYLES`) -> ``(question, subtitles or None) -> LLM prompt``
            (without ``<image>``).
        tables: ``task`` and/or ``info`` keys that reports break accuracy down by.
    """

    name: str
    kind: str
    load: Loader
    prompts: Mapping[str, PromptFn]
    tables: tuple[str, ...] = ("task",)

    def prompt(self, question: VideoQuestion, style: str, subtitles: str | None = None) -> str:
        """The LLM prompt of ``question`` in ``style`` (a style or an alias)."""
        style = resolve_prompt_style(style)
        if style not in self.prompts:
            raise UnknownPromptStyleError(f"{self.name} has no prompt style {style!r}; it has {sorted(self.prompts)}")
        return self.prompts[style](question, subtitles)


def _video_names(stem: str, prefixes: tuple[str, ...] = ("",)) -> tuple[str, ...]:
    return tuple(f"{prefix}{stem}{ext}" for prefix in prefixes for ext in VIDEO_EXTENSIONS) + (stem,)


def _letter_of(answer_text: str, options: tuple[str, ...], where: str) -> str:
    if answer_text not in options:
        raise QuestionFileError(f"{where}: the answer {answer_text!r} is not one of the candidates {list(options)}")
    return LETTERS[options.index(answer_text)]


def _finish(questions: list[VideoQuestion], source: Path) -> list[VideoQuestion]:
    if not questions:
        raise QuestionFileError(f"{source}: no questions found")
    check_unique_ids(questions, source)
    return questions


def _no_gt_file(name: str, gt_file: Path | None) -> None:
    if gt_file is not None:
        raise QuestionFileError(f"{name} keeps its answers in the question file; --gt-file {gt_file} is not used")


# --------------------------------------------------------------------------- Video-MME

_OPTION_PREFIX = re.compile(r"^\s*([A-J])\s*[.:)]\s*")


def _strip_option_letters(options: list, where: str) -> tuple[str, ...]:
    texts = []
    for index, option in enumerate(options):
        if not isinstance(option, str):
            raise QuestionFileError(f"{where}: option {index} is not a string")
        match = _OPTION_PREFIX.match(option)
        texts.append(option[match.end():] if match and match.group(1) == LETTERS[index] else option)
    return tuple(texts)


def _videomme_video_id(row: Mapping, where: str) -> str:
    for key in ("videoID", "youtube_id"):
        if isinstance(row.get(key), str) and row[key]:
            return row[key]
    if isinstance(row.get("url"), str) and "watch?v=" in row["url"]:
        return row["url"].split("watch?v=")[-1]
    raise QuestionFileError(f"{where}: no videoID, youtube_id or YouTube url to name the video file")


def load_videomme(question_file: Path, gt_file: Path | None) -> list[VideoQuestion]:
    """Flat rows (the parquet's fields) or the official per-video JSON (``questions`` lists)."""
    _no_gt_file("videomme", gt_file)
    questions = []
    for number, row in enumerate(read_rows(question_file)):
        video_where = f"{question_file} item {number}"
        video_id = _videomme_video_id(row, video_where)
        items = field(row, "questions", video_where, list) if "questions" in row else [row]
        for inner, item in enumerate(items):
            where = f"{video_where} question {inner}" if "questions" in row else video_where
            options = _strip_option_letters(field(item, "options", where, list), where)
            answer = item.get("answer")
            if answer is not None and answer not in LETTERS[: len(options)]:
                raise QuestionFileError(f"{where}: answer {answer!r} is not a letter of its {len(options)} options")
            questions.append(VideoQuestion(
                qid=str(field(item, "question_id", where, (str, int))),
                question=field(item, "question", where),
                videos=_video_names(video_id),
                options=options,
                answer=answer,
                task=str(item.get("task_type", "")),
                info={"duration": str(row.get("duration", "")), "domain": str(row.get("domain", "")),
                      "sub_category": str(row.get("sub_category", "")), "subtitle": f"{video_id}.srt"},
            ))
    return _finish(questions, question_file)


_VIDEOMME_PREFACE = ("Select the best answer to the following multiple-choice question based on the video{}. "
                     "Respond with only the letter (A, B, C, or D) of the correct option.")
_DIRECT = "Answer with the option's letter from the given choices directly"


def _videomme_release(q: VideoQuestion, subtitles: str | None) -> str:
    text = _VIDEOMME_PREFACE.format("") + f"\n{q.question}\n" + "".join(f"{o}\n" for o in q.lettered_options())
    text += f"{_DIRECT} and only give the best option. The best answer is: "
    return text if subtitles is None else f"This video's subtitles are listed below:\n{subtitles}\n{text}"


def _videomme_lmms(q: VideoQuestion, subtitles: str | None) -> str:
    body = _VIDEOMME_PREFACE.format(" and the subtitles") + f"\n{q.question}\n" + "\n".join(q.lettered_options())
    if subtitles is None:
        return f"{body}\n\n{_DIRECT}."
    subtitles = subtitles or "No subtitles available"
    return f"This video's subtitles are listed below: \n{subtitles}\n{body}\nThe best answer is:"


# --------------------------------------------------------------------------- task-folder benchmarks


@dataclasses.dataclass(frozen=True)
class FolderTask:
    """One task file of a benchmark released as a folder of JSON files."""

    name: str
    file: str
    video_dir: str
    bounded: bool = False


MVBENCH_TASKS = (
    FolderTask("Action Sequence", "action_sequence.json", "star/Charades_v1_480", bounded=True),
    FolderTask("Action Prediction", "action_prediction.json", "star/Charades_v1_480", bounded=True),
    FolderTask("Action Antonym", "action_antonym.json", "ssv2_video"),
    FolderTask("Fine-grained Action", "fine_grained_action.json", "Moments_in_Time_Raw/videos"),
    FolderTask("Unexpected Action", "unexpected_action.json", "FunQA_test/test"),
    FolderTask("Object Existence", "object_existence.json", "clevrer/video_validation"),
    FolderTask("Object Interaction", "object_interaction.json", "star/Charades_v1_480", bounded=True),
    FolderTask("Object Shuffle", "object_shuffle.json", "perception/videos"),
    FolderTask("Moving Direction", "moving_direction.json", "clevrer/video_validation"),
    FolderTask("Action Localization", "action_localization.json", "sta/sta_video", bounded=True),
    FolderTask("Scene Transition", "scene_transition.json", "scene_qa/video"),
    FolderTask("Action Count", "action_count.json", "perception/videos"),
    FolderTask("Moving Count", "moving_count.json", "clevrer/video_validation"),
    FolderTask("Moving Attribute", "moving_attribute.json", "clevrer/video_validation"),
    FolderTask("State Change", "state_change.json", "perception/videos"),
    FolderTask("Fine-grained Pose", "fine_grained_pose.json", "nturgbd"),
    FolderTask("Character Order", "character_order.json", "perception/videos"),
    FolderTask("Egocentric Navigation", "egocentric_navigation.json", "vlnqa"),
    # frame folders sampled at 3 fps (TVQA)
    FolderTask("Episodic Reasoning", "episodic_reasoning.json", "tvqa/frames_fps3_hq", bounded=True),
    FolderTask("Counterfactual Inference", "counterfactual_inference.json", "clevrer/video_validation"),
)

MLVU_TASKS = tuple(
    FolderTask(name, f"{stem}.json", stem)
    for name, stem in (("plotQA", "1_plotQA"), ("needle", "2_needle"), ("ego", "3_ego"), ("count", "4_count"),
                       ("order", "5_order"), ("anomaly_reco", "6_anomaly_reco"),
                       ("topic_reasoning", "7_topic_reasoning"))
)


def _load_task_folder(folder: Path, gt_file: Path | None, tasks: tuple[FolderTask, ...], benchmark: str):
    """Questions of every task file present in ``folder``; absent task files are named in a warning."""
    _no_gt_file(benchmark, gt_file)
    if not folder.is_dir():
        raise QuestionFileError(f"{benchmark}: --question-file must be the folder of task JSON files; {folder} is not a folder")
    present = [task for task in tasks if (folder / task.file).is_file()]
    if not present:
        raise QuestionFileError(f"{folder}: none of the {benchmark} task files ({', '.join(t.file for t in tasks)})")
    absent = [task.name for task in tasks if task not in present]
    if absent:
        logger.warning("%s: %d of %d %s tasks have no file and are left out: %s", folder, len(absent), len(tasks),
                       benchmark, ", ".join(absent))
    questions = []
    for task in present:
        path = folder / task.file
        for index, item in enumerate(read_rows(path)):
            where = f"{path} item {index}"
            options = tuple(str(c) for c in field(item, "candidates", where, list))
            bound = None
            if task.bounded:
                bound = (float(field(item, "start", where, (int, float))), float(field(item, "end", where, (int, float))))
            questions.append(VideoQuestion(
                qid=f"{Path(task.file).stem}/{index}",
                question=field(item, "question", where),
                videos=(f"{task.video_dir}/{field(item, 'video', where)}",),
                options=options,
                answer=_letter_of(str(field(item, "answer", where, (str, int, float))), options, where),
                task=task.name,
                bound=bound,
            ))
    return _finish(questions, folder)


def load_mvbench(question_file: Path, gt_file: Path | None) -> list[VideoQuestion]:
    return _load_task_folder(question_file, gt_file, MVBENCH_TASKS, "mvbench")


def load_mlvu(question_file: Path, gt_file: Path | None) -> list[VideoQuestion]:
    return _load_task_folder(question_file, gt_file, MLVU_TASKS, "mlvu")


def _mvbench_release(q: VideoQuestion, subtitles: str | None) -> str:
    options = "".join(f"{o}\n" for o in q.lettered_options("({letter}) {text}"))
    return f"Question: {q.question}\nOptions:\n{options}{_DIRECT} and only give the best option."


def _mvbench_lmms(q: VideoQuestion, subtitles: str | None) -> str:
    options = "".join(f"{o}\n" for o in q.lettered_options("({letter}) {text}"))
    return f"Question:{q.question}\nOption:\n{options}Only give the best option.\n"


def _mlvu_release(q: VideoQuestion, subtitles: str | None) -> str:
    options = "".join(f"{o}\n" for o in q.lettered_options("({letter}) {text}"))
    return f"Question: {q.question}\nOptions: \n{options}\n{_DIRECT} and only give the best option."


def _mlvu_lmms(q: VideoQuestion, subtitles: str | None) -> str:
    options = "".join(f"\n{o}" for o in q.lettered_options("({letter}) {text}"))
    return f"{q.question}{options}\nOnly give the best option.\nBest option: ("


# --------------------------------------------------------------------------- EgoSchema


def load_egoschema(question_file: Path, gt_file: Path | None) -> list[VideoQuestion]:
    """The release's ``questions.json`` (``q_uid``, ``option 0``..``option 4``) with the answers of the
    500-question subset in ``subset_answers.json`` (``{q_uid: index}``), or lmms-eval's rows
    (``question_idx``, ``video_idx``, ``option`` list, ``answer`` index)."""
    answers: Mapping = {}
    if gt_file is not None:
        answers = read_json_file(gt_file)
        if not isinstance(answers, dict):
            raise QuestionFileError(f"{gt_file}: expected an object {{q_uid: answer index}}")
    questions = []
    for number, row in enumerate(read_rows(question_file)):
        where = f"{question_file} item {number}"
        if "q_uid" in row:
            qid = field(row, "q_uid", where)
            options = tuple(str(field(row, f"option {i}", where, (str, int))) for i in range(5))
            video = qid
            answer = answers.get(qid)
        else:
            qid = str(field(row, "question_idx", where, (str, int)))
            options = _strip_option_letters(field(row, "option", where, list), where)
            video = str(field(row, "video_idx", where, (str, int)))
            answer = answers.get(qid, row.get("answer"))
        if answer is not None and str(answer).strip() not in ("", "None"):
            index = int(answer)
            if not 0 <= index < len(options):
                raise QuestionFileError(f"{gt_file or where}: answer index {answer!r} of {qid} is out of range")
            answer = LETTERS[index]
        else:
            answer = None
        questions.append(VideoQuestion(qid=qid, question=field(row, "question", where), videos=_video_names(video),
                                       options=options, answer=answer))
    unknown = set(answers) - {q.qid for q in questions}
    if unknown:
        raise QuestionFileError(f"{gt_file}: {len(unknown)} answers for ids not in {question_file}, e.g. {sorted(unknown)[:3]}")
    return _finish(questions, question_file)


def _egoschema_release(q: VideoQuestion, subtitles: str | None) -> str:
    options = "".join(f"{o}\n" for o in q.lettered_options("({letter}) {text}"))
    return (f"Select the best answer to the following multiple-choice question based on the video.\n{q.question}\n"
            f"Options:\n{options}{_DIRECT} and only give the best option. The best answer is: ")


def _egoschema_lmms(q: VideoQuestion, subtitles: str | None) -> str:
    options = "".join(f"\n{o}" for o in q.lettered_options())
    return f"{q.question}{options}\n{_DIRECT}."


# --------------------------------------------------------------------------- open-ended


def load_activitynet(question_file: Path, gt_file: Path | None) -> list[VideoQuestion]:
    """``test_q.json`` (``video_name``, ``question``, ``question_id``); answers from ``test_a.json``."""
    answers: dict[str, Mapping] = {}
    if gt_file is not None:
        for index, row in enumerate(read_rows(gt_file)):
            answers[str(field(row, "question_id", f"{gt_file} item {index}", (str, int)))] = row
    questions = []
    for index, row in enumerate(read_rows(question_file)):
        where = f"{question_file} item {index}"
        qid = str(field(row, "question_id", where, (str, int)))
        gt = answers.get(qid)
        if gt_file is not None and gt is None:
            raise QuestionFileError(f"{gt_file}: no answer for question {qid} of {question_file}")
        questions.append(VideoQuestion(
            qid=qid,
            question=field(row, "question", where),
            videos=_video_names(str(field(row, "video_name", where, (str, int))), prefixes=("v_", "")),
            answer=None if gt is None else str(gt.get("answer")),
            task=str(gt.get("type", "")) if gt else "",
        ))
    return _finish(questions, question_file)


def _load_vcgpt(question_file: Path, gt_file: Path | None, keys: tuple[str, ...]) -> list[VideoQuestion]:
    """VideoChatGPT bench files: ``{video_name, Q, A}``, or ``{video_name, Q1, Q2, A}`` (consistency:
    each of the two phrasings becomes its own question, ``<index>/q1`` and ``<index>/q2``)."""
    _no_gt_file("vcgpt", gt_file)
    questions = []
    for index, row in enumerate(read_rows(question_file)):
        where = f"{question_file} item {index}"
        video = str(field(row, "video_name", where, (str, int)))
        for key in keys:
            questions.append(VideoQuestion(
                qid=str(index) if len(keys) == 1 else f"{index}/{key.lower()}",
                question=field(row, key, where),
                videos=_video_names(video),
                answer=str(field(row, "A", where, (str, int, float))),
                info={"pair": str(index), "video_name": video},
            ))
    return _finish(questions, question_file)


def _activitynet_lmms(q: VideoQuestion, subtitles: str | None) -> str:
    return q.question.capitalize() + "?" + " Answer the question using a single word or phrase."


def _raw_question(q: VideoQuestion, subtitles: str | None) -> str:
    return q.question


_RAW = {"release": _raw_question, "lmms": _raw_question}

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("videomme", "mcqa", load_videomme, {"release": _videomme_release, "lmms": _videomme_lmms},
                  tables=("duration", "task")),
        Benchmark("mvbench", "mcqa", load_mvbench, {"release": _mvbench_release, "lmms": _mvbench_lmms}),
        Benchmark("egoschema", "mcqa", load_egoschema, {"release": _egoschema_release, "lmms": _egoschema_lmms},
                  tables=()),
        Benchmark("mlvu", "mcqa", load_mlvu, {"release": _mlvu_release, "lmms": _mlvu_lmms}),
        Benchmark("activitynet", "oqa", load_activitynet, {"release": _raw_question, "lmms": _activitynet_lmms}),
        Benchmark("vcgpt_generic", "oqa", lambda f, g: _load_vcgpt(f, g, ("Q",)), _RAW, tables=()),
        Benchmark("vcgpt_temporal", "oqa", lambda f, g: _load_vcgpt(f, g, ("Q",)), _RAW, tables=()),
        Benchmark("vcgpt_consistency", "oqa", lambda f, g: _load_vcgpt(f, g, ("Q1", "Q2")), _RAW, tables=()),
    )
}


def get_benchmark(name: str, kind: str | None = None) -> Benchmark:
    choices = sorted(n for n, b in BENCHMARKS.items() if kind is None or b.kind == kind)
    if name not in choices:
        raise ValueError(f"unknown benchmark {name!r}; choose from {choices}")
    return BENCHMARKS[name]


def load_questions(benchmark: str, question_file: str | Path, gt_file: str | Path | None = None) -> list[VideoQuestion]:
    """The benchmark's questions, in file order."""
    return BENCHMARKS[benchmark].load(Path(question_file), None if gt_file is None else Path(gt_file))
