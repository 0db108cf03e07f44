"""``LLaVATrainer``: transformers' ``Trainer`` with LLaVA's optimizer groups, sampler and saving.

* Optimizer groups by module (:mod:`llava.train.tunable`): ``--mm_projector_lr``,
  ``--mm_vision_tower_lr`` and each plugin group's LR flag apply to the parameters of their part.
* Auxiliary losses a projector returns (:class:`llava.plugin.AuxLoss`) are logged next to ``loss``,
  each averaged over the steps since the last log and over ranks.
* ``--group_by_length`` / ``--group_by_modality_length``: LLaVA's length-grouped sampler.
* Adapter-only runs (stages 1-2) save ``config.json`` + ``mm_projector.bin`` instead of the whole model,
  in checkpoints too (they resume from it, with optimizer, scheduler and RNG states as usual).
* The data report: skip/note events that arrive with each batch are counted, saved in every
  checkpoint (so a resumed run keeps counting), and summarised when training ends.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import Sampler
from transformers import Trainer
from transformers.trainer_pt_utils import nested_gather

from llava.model.llava_arch import load_projector_weights

from .data import DATA_REPORT_NAME, DataReport
from .tunable import parameter_groups, standalone_parameter_ids

logger = logging.getLogger(__name__)

ADAPTER_FILE = "mm_projector.bin"
OPTIMIZER_GROUPS_NAME = "optimizer_groups.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class LengthGroupedSampler(Sampler):
    """LLaVA's sampler: indices in megabatches of ``world_size * batch_size`` sorted by length, so
    each rank's batch holds samples of similar length. With ``group_by_modality`` multimodal
    (positive length) and text-only (negative) samples never share a megabatch; the mixed
    remainder comes last. Deterministic per ``seed`` and epoch (``set_epoch``)."""

    def __init__(self, batch_size: int, world_size: int, lengths: list[int], group_by_modality: bool = False,
                 seed: int = 0):
        if not lengths:
            raise ValueError("LengthGroupedSampler needs the dataset's lengths")
        self.batch_size, self.world_size = batch_size, world_size
        self.lengths, self.group_by_modality, self.seed = list(lengths), group_by_modality, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def _megabatches(self, indices: list[int], generator) -> list[list[int]]:
        order = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
        size = self.world_size * self.batch_size
        megabatches = [order[i:i + size] for i in range(0, len(order), size)]
        return [self._balanced(sorted(mb, key=lambda i: abs(self.lengths[i]), reverse=True)) for mb in megabatches]

    def _balanced(self, megabatch: list[int]) -> list[int]:
        """Splits a length-sorted megabatch into ``world_size`` chunks of similar total length."""
        if len(megabatch) % self.world_size:
            return megabatch
        chunks: list[list[int]] = [[] for _ in range(self.world_size)]
        totals = [0] * self.world_size
        per_chunk = len(megabatch) // self.world_size
        for index in megabatch:
            open_chunks = [c for c in range(self.world_size) if len(chunks[c]) < per_chunk]
            target = min(open_chunks, key=lambda c: totals[c])
            chunks[target].append(index)
            totals[target] += abs(self.lengths[index])
        return [i for chunk in chunks for i in chunk]

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        everything = list(range(len(self.lengths)))
        if not self.group_by_modality:
            return iter([i for mb in self._megabatches(everything, generator) for i in mb])
        multimodal = [i for i in everything if self.lengths[i] > 0]
        text = [i for i in everything if self.lengths[i] <= 0]
        size = self.world_size * self.batch_size
        groups = self._megabatches(multimodal, generator) + self._megabatches(text, generator)
        full = [mb for mb in groups if len(mb) == size]
        remainder = [i for mb in groups if len(mb) != size for i in mb]
        order = torch.randperm(len(full), generator=generator).tolist()
        return iter([i for k in order for i in full[k]] + remainder)


def find_resume_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete ``checkpoint-N`` in ``output_dir``, or ``None``.

    A checkpoint is complete when its ``trainer_state.json`` (written last) and ``data_report.json``
    (written first) parse; folders left by a run killed while saving are reported and ignored, not
    deleted.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = sorted(((int(m[1]), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))),
                   reverse=True)
    for _, path in found:
        for name in ("trainer_state.json", DATA_REPORT_NAME):
            try:
                json.loads((path / name).read_text())
            except (OSError, json.JSONDecodeError):
                logger.warning("ignoring incomplete checkpoint %s (no readable %s)", path, name)
                break
        else:
            return path
    return None


class LLaVATrainer(Trainer):
    """See the module docstring. ``adapter_only`` is decided by ``train.py`` from the tunable parts."""

    def __init__(self, *args, adapter_only: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.adapter_only = adapter_only
        self.data_report = DataReport()
        self._groups_recorded = False
        self._aux_totals: dict[str, torch.Tensor] = {}
        self._aux_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ optimizer and sampler

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = parameter_groups(opt_model, self.args, set(self.get_decay_parameter_names(opt_model)))
            self._group_sizes = {g["name"]: sum(getattr(p, "ds_numel", p.numel()) for p in g["params"]) for g in groups}
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs.pop("lr", None)  # each group has its own
            self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        args = self.args
        if args.group_by_length or args.group_by_modality_length:
            lengths = dataset.modality_lengths if args.group_by_modality_length else dataset.lengths
            return LengthGroupedSampler(args.train_batch_size, args.world_size * args.gradient_accumulation_steps,
                                        lengths, group_by_modality=args.group_by_modality_length, seed=args.seed)
        return super()._get_train_sampler(train_dataset)

    # ------------------------------------------------------------------ data report

    def training_step(self, model, inputs, num_items_in_batch=None):
        for event in inputs.pop("data_events", None) or []:
            self.data_report.add(tuple(event))
        if not self._groups_recorded:
            self._record_optimizer_groups()
        return super().training_step(model, inputs, num_items_in_batch)

    def _record_optimizer_groups(self) -> None:
        """Writes ``optimizer_groups.json`` (name, base LR, size of each group) as the optimizer has them,
        after DeepSpeed or any wrapper took it over: the record of which LR each module trained with."""
        self._groups_recorded = True
        if not self.args.should_save or self.optimizer is None:
            return
        # sizes as built: DeepSpeed's ZeRO optimizers swap the group's params for flat partitions
        sizes = getattr(self, "_group_sizes", {})
        groups = [{"name": g.get("name", f"group{i}"), "lr": g.get("initial_lr", g["lr"]),
                   "weight_decay": g.get("weight_decay"), "numel": sizes.get(g.get("name"))}
                  for i, g in enumerate(self.optimizer.param_groups)]
        Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
        Path(self.args.output_dir, OPTIMIZER_GROUPS_NAME).write_text(json.dumps(groups, indent=1))

    # ------------------------------------------------------------------ auxiliary losses

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's loss (LM + weighted auxiliary losses); the auxiliary ones are kept for the log."""
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if self.model.training:
            for name, value in (getattr(outputs, "aux_losses", None) or {}).items():
                self._aux_totals[name] = self._aux_totals.get(name, 0.0) + value.detach().float()
                self._aux_counts[name] = self._aux_counts.get(name, 0) + 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds ``loss_<name>`` for each auxiliary loss: its mean since the last log, over ranks (every
        rank logs a training step, so the gather is collective)."""
        if "loss" in logs and self._aux_totals:
            names = sorted(self._aux_totals)
            means = torch.stack([self._aux_totals[n] / self._aux_counts[n] for n in names])
            means = nested_gather(means, self.args.parallel_mode).view(-1, len(names)).mean(0)
            logs.update({f"loss_{name}": value for name, value in zip(names, means.tolist())})
            self._aux_totals, self._aux_counts = {}, {}
        super().log(logs, start_time)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs.pop("data_events", None)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def gathered_data_report(self) -> DataReport:
        """This run's report merged over ranks (collective: call on every rank)."""
        report = DataReport()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, self.data_report.to_dict())
            for part in parts:
                report.merge(part)
        else:
            report.merge(self.data_report)
        return report

    def load_data_report(self, checkpoint: str | os.PathLike) -> None:
        """Continues the counts saved in ``checkpoint`` (rank 0 holds them; others start empty)."""
        path = Path(checkpoint) / DATA_REPORT_NAME
        if self.args.process_index == 0 and path.is_file():
            self.data_report.merge(json.loads(path.read_text()))

    def _save_checkpoint(self, model, trial):
        """The data report goes in first: ``trainer_state.json``, written last by the Trainer, marks the
        checkpoint complete, so a complete checkpoint always carries the counts it resumes with."""
        report = self.gathered_data_report()
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / DATA_REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=1))
        super()._save_checkpoint(model, trial)

    # ------------------------------------------------------------------ adapter-only saving

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not self.adapter_only:
            super().save_model(output_dir, _internal_call)
            return
        output_dir = output_dir or self.args.output_dir
        save_adapter(self.model, output_dir, self.args.should_save)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        path = Path(resume_from_checkpoint) / ADAPTER_FILE
        if not self.adapter_only or not path.is_file():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        target = (model or self.model).get_model().mm_projector
        load_projector_weights(target, str(path), strict=True)
        logger.info("resumed the adapter from %s", path)


def adapter_state_dict(model) -> dict[str, torch.Tensor]:
    """The adapter's tensors under their full names (``model.mm_projector.*``), on CPU. Frozen
    standalone parts (a text tower that loads from its own folder) are left out. Collective under
    ZeRO-3 (gathers the partitions): call on every rank."""
    projector = model.get_model().mm_projector
    prefix = next(n for n, m in model.named_modules() if m is projector) + "."
    excluded = tuple(_frozen_standalone_children(projector))
    params = [p for n, p in projector.named_parameters() if not n.startswith(excluded)]
    with _gathered(params):
        return {prefix + k: v.detach().to("cpu", copy=True) for k, v in projector.state_dict().items()
                if not k.startswith(excluded)}


def _frozen_standalone_children(projector) -> list[str]:
    """``"name."`` of each direct child made only of frozen standalone-part parameters."""
    standalone = standalone_parameter_ids(projector)
    frozen = {id(p) for p in projector.parameters() if id(p) in standalone and not p.requires_grad}
    children = []
    for name, module in projector.named_children():
        params = list(module.parameters())
        if params and all(id(p) in frozen for p in params):
            children.append(name + ".")
    return children


def _gathered(params):
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    import contextlib

    return contextlib.nullcontext()


def save_adapter(model, output_dir: str | os.PathLike, is_main: bool = True) -> None:
    """Writes ``config.json`` + ``mm_projector.bin`` (upstream's stage-1/2 output)."""
    state = adapter_state_dict(model)
    if not is_main:
        return
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    torch.save(state, folder / ADAPTER_FILE)
    logger.info("saved %d adapter tensors (%.1fM values) to %s", len(state),
                sum(t.numel() for t in state.values()) / 1e6, folder / ADAPTER_FILE)


__all__ = ["LLaVATrainer", "LengthGroupedSampler", "adapter_state_dict", "find_resume_checkpoint", "save_adapter"]
