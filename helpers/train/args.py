"""The training block: one dataclass of the settings every trainer shares, and the resume rule.

:class:`TrainArgs` (optimizer, schedule, LoRA, precision, run) is what :func:`helpers.train.loop.fit`
and :func:`helpers.train.lora.add_lora` read; the student's :class:`~helpers.train.kd_finetune.KDArgs`
and the teacher's :class:`~helpers.train.train_reranker.RerankerTrainArgs` extend it and are passed
unchanged from the notebook or command to the loop. A stage that wants another default re-declares
the field with :func:`helpers.common.cli.retune` (the help text stays here). The defaults are
FlagEmbedding's embedder fine-tuning defaults.

Whether a setting must match for a run to be resumed is the field's ``resume`` metadata
(:func:`helpers.common.cli.arg`): :func:`resume_keys` collects them, :func:`settings_diff` compares
a saved run with this one (a field added later counts as its ``before`` value in an older run).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Optional, Union

from helpers.common.cli import arg, canonical_flags
from helpers.common.devices import DeviceArgs


@dataclass(kw_only=True)
class TrainArgs(DeviceArgs):
    output_dir: str = arg("model_output/train", "per-epoch adapters (lora_epoch_{n}), metrics.jsonl, the "
                          "training state", resume=False)
    learning_rate: float = arg(1e-4, "AdamW learning rate")
    num_train_epochs: int = arg(5, "epochs", resume=False)
    per_device_train_batch_size: int = arg(8, "queries per device per step")
    gradient_accumulation_steps: int = arg(1, "micro-batches per optimizer step")
    train_group_size: int = arg(8, "1 positive + (train_group_size - 1) negatives per query")
    warmup_ratio: float = arg(0.1, "share of steps with linear warmup (then linear decay)")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    max_grad_norm: float = arg(1.0, "gradient clipping (0: off)")
    max_nonfinite_steps: int = arg(8, "a non-finite loss skips its optimizer step (logged, counted); stop after "
                                   "this many in a row", resume=False)
    seed: int = arg(42, "seed of sampling, shuffling, LoRA init, dropout and the eval batches")
    use_lora: bool = arg(True, "False: full fine-tuning (every weight trained, fp32 master weights)", before=True)
    lora_rank: int = arg(64, "LoRA r")
    lora_alpha: float = arg(32, "LoRA alpha")
    lora_dropout: float = arg(0.1, "LoRA dropout")
    target_modules: Union[str, list, None] = arg(None, "LoRA target modules, comma-separated; None: the architecture's "
                                        "(decoders: q/k/v/o/gate/up/down_proj; encoders: peft's default), logged")
    gradient_checkpointing: Optional[bool] = arg(
        None, "recompute activations in backward (less memory, ~1 more forward of time); None: auto, on only "
        "where one step's activations would not fit in half the free device memory (logged)", resume=False)
    length_buckets: bool = arg(True, "run each batch's texts in length-sorted chunks, each padded to its own "
                               "longest (same outputs and loss; less padding)", resume=False)
    deadline: Optional[float] = arg(None, "unix time: stop after the last epoch that ends before it (measured epoch "
                                    "time; resume later); None: $EEDI_DEADLINE (run_all.py --time_budget), else none",
                                    resume=False)
    logging_steps: int = arg(1, "log the loss every n optimizer steps", resume=False)
    overwrite_output_dir: bool = arg(False, "start over instead of resuming output_dir", resume=False)
    show_progress: bool = arg(True, "tqdm bars", resume=False)

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = ",".join(self.target_modules)
        self.target_modules = self.target_modules or None
        for k in ("num_train_epochs", "per_device_train_batch_size", "train_group_size",
                  "gradient_accumulation_steps", "lora_rank", "logging_steps"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be at least 1, got {getattr(self, k)}")

    @property
    def target_list(self) -> list[str]:
        """``target_modules`` as a list (empty: chosen by architecture)."""
        return [t.strip() for t in (self.target_modules or "").split(",") if t.strip()]


def resume_keys(args) -> dict:
    """The settings a run of ``args`` may only be resumed with: every field whose ``resume``
    metadata is not False (fields without metadata count)."""
    return {f.name: getattr(args, f.name) for f in fields(args) if f.metadata.get("resume", True)}


def settings_diff(saved: dict, now: dict, cls) -> list[str]:
    """The names whose value differs between a saved run's keys and this run's (``cls``: the
    stage's dataclass). Older runs are read as they were meant: other spellings of a flag count as
    ours, a field that does not take part in resuming is ignored, a field added since counts as its
    ``before`` value."""
    known = {f.name: f for f in fields(cls)}
    saved = {k: v for k, v in canonical_flags(saved).items()
             if k not in known or known[k].metadata.get("resume", True)}
    for name, f in known.items():
        if "before" in f.metadata and name not in saved:
            saved[name] = f.metadata["before"]
    saved = json.loads(json.dumps(saved, default=str))
    now = json.loads(json.dumps(now, default=str))
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
