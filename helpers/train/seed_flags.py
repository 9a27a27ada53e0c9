"""FlagEmbedding's fine-tuning flags on our commands: one table, so a pasted seed command runs unchanged.

Users paste FlagEmbedding 1.x's command (``torchrun -m FlagEmbedding.finetune.embedder.decoder_only.icl
...``, its ``examples/finetune/embedder`` scripts, the Eedi team's variants). Flags that share our
field names (``--learning_rate``, ``--temperature``, ``--query_max_len``, ``--fp16`` (ours: ``--use_fp16``),
``--gradient_checkpointing`` ...) are our own flags already. :data:`EMBEDDER_FLAGS` lists the
others, each one of:

- **mapped**: sets one of our fields (``field``), its value converted by ``convert``
  (``KEEP``: this value leaves the field as it is);
- **no effect here** (``field`` None): accepted, and named in ONE warning with its ``reason``;
  ``convert`` may still refuse a value that we cannot honour (``ValueError``);
- **our own flag in FlagEmbedding's syntax** (``flag`` == ``field``, e.g. ``--target_modules
  q_proj k_proj``): the field's parser takes the seed's form and ``convert`` normalises it, on
  every parse (the torchrun children included).

A mapped flag and our own flag for the same field must agree, or the parse fails naming both.
:func:`seed_parser` builds a command's parser with the table; its ``parse_args`` returns our
fields only, so ``Args(**vars(parser.parse_args(argv)))`` keeps working.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass, fields
from typing import Any, Callable, Optional, Sequence

from helpers.common.cli import FLAG_SPELLINGS, dataclass_parser, given_dests, none_or, none_or_str, str2bool

log = logging.getLogger(__name__)

KEEP = object()          # a convert result: leave the field as it is
DEST_PREFIX = "seed_flag__"


@dataclass(frozen=True)
class SeedFlag:
    flag: str                                  # FlagEmbedding's name, without the dashes
    kind: str                                  # bool | str | int | float | list
    field: Optional[str] = None                # our field it sets; None: no effect here
    convert: Optional[Callable[[Any], Any]] = None   # value -> field value | KEEP; ValueError: refused
    reason: str = ""                           # no effect: why; mapped: what it means here
    choices: Optional[tuple] = None

    @property
    def dest(self) -> str:
        return self.flag if self.flag == self.field else DEST_PREFIX + self.flag

    def add_kwargs(self) -> dict:
        kw = {"bool": dict(type=str2bool, nargs="?", const=True, metavar="True|False"),
              "str": dict(type=none_or_str), "int": dict(type=none_or(int)),
              "float": dict(type=none_or(float)), "list": dict(nargs="+", type=none_or_str)}[self.kind]
        if self.choices:
            kw["choices"] = self.choices
        elif self.kind != "bool":
            kw["metavar"] = self.flag.upper()
        return kw

    def help(self) -> str:
        if self.field is None:
            return f"no effect here: {self.reason}"
        return f"-> {self.field}" + (f": {self.reason}" if self.reason else "")


# ----------------------------------------------------------------------------- converters
def _names(v) -> Optional[str]:
    """``q_proj k_proj`` / ``q_proj,k_proj`` / a list of either -> ``"q_proj,k_proj"``; None/empty -> None."""
    if v is None:
        return None
    parts = v if isinstance(v, (list, tuple)) else [v]
    names = [n for p in parts if p is not None for n in re.split(r"[,\s]+", str(p)) if n]
    return ",".join(names) or None


def _one_path(v):
    """FlagEmbedding takes several ``--train_data`` paths; this command trains on one file."""
    if not isinstance(v, (list, tuple)):
        return v
    paths = [p for p in v if p is not None]
    if len(paths) > 1:
        raise ValueError(f"--train_data: {len(paths)} paths given ({' '.join(paths)}); this command trains "
                         "on one mined (and scored) file: concatenate them, e.g. cat a.jsonl b.jsonl > train.jsonl")
    return paths[0] if paths else None


def _must_be_true(what: str):
    def convert(v):
        if v is False:
            raise ValueError(what)
        return KEEP
    return convert


def _if_true(value_if_true, value_if_false):
    return lambda v: value_if_true if v else value_if_false


def _same(v):
    return v


# ----------------------------------------------------------------------------- the table
def _noop(flag, kind, reason, convert=None) -> SeedFlag:
    return SeedFlag(flag, kind, None, convert, reason)


EMBEDDER_FLAGS: tuple[SeedFlag, ...] = (
    # --- mapped: they mean something here
    SeedFlag("sentence_pooling_method", "str", "pooling_method", _same,
             "last_token | mean | cls", choices=("cls", "mean", "last_token")),
    SeedFlag("retrieval_use_examples", "bool", "max_examples", _if_true(KEEP, 0),
             "False: max_examples 0 (no in-context examples); True: max_examples as given"),
    SeedFlag("bf16", "bool", "use_fp16", _if_true(True, KEEP),
             "True: mixed precision on (use_fp16 is our one switch: bf16 from compute capability 8, fp16 below)"),
    SeedFlag("use_qlora", "bool", "load_in_4bit", _same, "4-bit base (bitsandbytes)"),
    SeedFlag("eval_corpus_path", "str", "corpus_file", _same, "corpus of the per-epoch retrieval metrics"),
    SeedFlag("corpus_path", "str", "corpus_file", _same, "corpus of the per-epoch retrieval metrics"),
    SeedFlag("eval_examples_path", "str", "examples_for_task", _same,
             "in-context examples of the per-epoch retrieval eval (the Eedi team's flag)"),
    SeedFlag("per_device_eval_batch_size", "int", "embedder_batch_size", _same, "batch size of the per-epoch eval"),
    # --- our own flags, in FlagEmbedding's syntax
    SeedFlag("target_modules", "list", "target_modules", _names,
             "space- or comma-separated module names; None: the architecture's"),
    SeedFlag("train_data", "list", "train_data", _one_path, "one mined (and scored) file"),
    SeedFlag("use_lora", "bool", "use_lora", _same, "True: LoRA (the default); False: full fine-tuning"),
    # --- accepted, refused where we cannot honour the value
    _noop("normlized", "bool", "embeddings are always L2-normalised (False is refused; FlagEmbedding 1.2's spelling)",
          _must_be_true("--normlized False is not supported: embeddings are always L2-normalised")),
    # --- accepted, no effect here
    _noop("deepspeed", "str", "DeepSpeed is not used: one process per device (DDP via torchrun, --devices)"),
    _noop("dataloader_drop_last", "bool", "the last incomplete train batch is always dropped"),
    _noop("same_dataset_within_batch", "bool", "the train file is one dataset"),
    _noop("small_threshold", "int", "only for several datasets merged by size (one train file here)"),
    _noop("drop_threshold", "int", "only for several datasets merged by size (one train file here)"),
    _noop("max_example_num_per_dataset", "int", "every query of the train file is used"),
    _noop("pad_to_multiple_of", "int", "batches are padded to their longest text"),
    _noop("cache_dir", "str", "models load from local folders or demo aliases; nothing is downloaded"),
    _noop("cache_path", "str", "the train file is read directly (no dataset cache)"),
    _noop("token", "str", "nothing is downloaded"),
    _noop("save_steps", "int", "state is saved after every epoch; a rerun resumes after the last finished one"),
    _noop("save_strategy", "str", "state is saved after every epoch"),
    _noop("save_total_limit", "int", "every epoch's adapter is kept (lora_epoch_{n})"),
    _noop("save_lora_every_epoch", "bool", "the adapter is always saved after every epoch (lora_epoch_{n})"),
    _noop("resume_from_checkpoint", "str", "a rerun resumes output_dir by itself; --overwrite_output_dir starts over"),
    _noop("eval_strategy", "str", "evaluation runs after every epoch"),
    _noop("evaluation_strategy", "str", "evaluation runs after every epoch"),
    _noop("eval_queries_path", "str", "the retrieval metrics use the queries of --eval_data"),
    _noop("use_flash_attn", "bool", "the model's default attention implementation is used"),
    _noop("use_slow_tokenizer", "bool", "the model folder's tokenizer is used as saved"),
    _noop("additional_special_tokens", "list", "no tokens are added: the model folder's tokenizer is used as saved"),
    _noop("model_type", "str", "the model class is --embedder_model_class"),
    _noop("lora_extra_parameters", "list", "only the LoRA adapters are trained (no extra full modules)"),
    _noop("report_to", "list", "metrics go to the log and output_dir/metrics.jsonl"),
    _noop("run_name", "str", "no experiment tracker"),
    _noop("ddp_find_unused_parameters", "bool", "DDP is set up by this command"),
    _noop("dataloader_num_workers", "int", "batches are built in the training process"),
    _noop("sub_batch_size", "int", "each micro-batch is encoded in one pass"),
    _noop("symmetric_batch_size", "int", "symmetric (STS, clustering, classification) data only; this is retrieval"),
    _noop("symmetric_train_group_size", "int", "symmetric (STS, clustering, classification) data only; this is retrieval"),
    _noop("max_class_neg", "int", "classification data only; this is retrieval"),
)


# ----------------------------------------------------------------------------- applying it
@dataclass
class SeedResult:
    values: dict                  # our fields, the seed flags applied
    noops: list                   # [(flag, value, reason)] given flags with no effect here
    mapped: list                  # ["--flag value -> field=value", ...]


def _show(v) -> str:
    return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def apply_seed_flags(ns: dict, given: set, table: Sequence[SeedFlag] = EMBEDDER_FLAGS) -> SeedResult:
    """Parsed values (our fields, plus the given seed flags under their dests) -> our fields.

    ``given``: the dests set explicitly on the command line (a mapped flag that disagrees with one
    of them is an error). Raises ``ValueError`` (naming the flags) on a refused value or a conflict.
    """
    values = {k: v for k, v in ns.items() if not k.startswith(DEST_PREFIX)}
    noops, mapped, set_by = [], [], {}
    for s in table:
        if s.flag == s.field:                              # our own flag in the seed's syntax
            if s.field in values:
                values[s.field] = s.convert(values[s.field])
            continue
        if s.dest not in ns:
            continue
        v = ns[s.dest]
        out = s.convert(v) if s.convert else KEEP
        if s.field is None:
            noops.append((s.flag, v, s.reason))
            continue
        if out is KEEP:
            continue
        if s.field in given and values[s.field] != out:
            others = "".join(f" (or --{o})" for o, ours in FLAG_SPELLINGS.items() if ours == s.field)
            raise ValueError(f"--{s.flag} {_show(v)} sets {s.field}={out!r} but --{s.field}{others} "
                             f"{_show(values[s.field])} is given too: give one of them")
        if s.field in set_by and set_by[s.field][1] != out:
            raise ValueError(f"--{set_by[s.field][0]} and --{s.flag} disagree on {s.field}: give one of them")
        values[s.field] = out
        set_by[s.field] = (s.flag, out)
        mapped.append(f"--{s.flag} {_show(v)} -> {s.field}={out!r}")
    return SeedResult(values, noops, mapped)


def noop_warning(noops: list) -> str:
    return ("FlagEmbedding flags accepted but with no effect here: " +
            " | ".join(f"--{f}: {reason}" for f, _, reason in noops))


def report(res: SeedResult) -> None:
    """Log what the seed flags did: one INFO line for the mapped ones, ONE warning for the no-ops."""
    if res.mapped:
        log.info("FlagEmbedding flags mapped: %s", "; ".join(res.mapped))
    if res.noops:
        log.warning("%s", noop_warning(res.noops))


class SeedFlagParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose result holds our fields only, the seed flags applied
    (:func:`apply_seed_flags`) and reported (:func:`report`)."""
    seed_table: Sequence[SeedFlag] = ()

    def parse_known_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else [str(a) for a in args]
        ns, extra = super().parse_known_args(argv, namespace)
        try:
            res = apply_seed_flags(vars(ns), given_dests(self, argv), self.seed_table)
        except ValueError as e:
            self.error(str(e))
        report(res)
        return argparse.Namespace(**res.values), extra


def seed_parser(cls, description: str = "", prog: Optional[str] = None, aliases: Optional[dict] = None,
                choices: Optional[dict] = None, table: Sequence[SeedFlag] = EMBEDDER_FLAGS) -> SeedFlagParser:
    """:func:`helpers.common.cli.dataclass_parser` of ``cls`` plus the seed's flags of ``table``, shown in
    their own ``--help`` group."""
    names = {f.name for f in fields(cls)}
    for s in table:
        if s.field is not None and s.field not in names:
            raise ValueError(f"seed flag --{s.flag}: {cls.__name__} has no field {s.field!r}")
        if s.flag in names and s.flag != s.field:
            raise ValueError(f"seed flag --{s.flag} is also a {cls.__name__} field: map it to itself")
    overrides = {s.field: s.add_kwargs() for s in table if s.flag == s.field}
    for kw in overrides.values():
        kw.pop("metavar", None)
    p = dataclass_parser(cls, description, prog=prog, aliases=aliases, choices=choices, overrides=overrides,
                         parser_class=SeedFlagParser, usage="%(prog)s [-h] [--FLAG VALUE ...] (flags below; "
                         "FlagEmbedding's in their own group)",
                         epilog="FlagEmbedding's flags are accepted so that a pasted seed command runs: "
                                "see 'FlagEmbedding flags' above (table: helpers/train/seed_flags.py).")
    p.seed_table = tuple(table)
    g = p.add_argument_group("FlagEmbedding flags", "accepted for FlagEmbedding compatibility "
                             "(mapped to the flags above, or no effect here and named in one warning)")
    for s in table:
        if s.flag == s.field:
            continue
        g.add_argument(f"--{s.flag}", dest=s.dest, default=argparse.SUPPRESS, help=s.help(), **s.add_kwargs())
    return p
