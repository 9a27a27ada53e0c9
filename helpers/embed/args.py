"""The embedder block: one dataclass of the flags that say how texts become embeddings.

Mining (:class:`helpers.mine.hn_mine.HnMineArgs`), training and its per-epoch evaluation
(:class:`helpers.train.kd_finetune.KDArgs`), evaluation (:class:`helpers.eval.evaluate.EvalArgs`)
and submission (:class:`helpers.eval.submission.SubmissionArgs`) all extend :class:`EmbedderArgs`,
and :class:`~helpers.embed.embedder.Embedder` takes it as it is, so a concept has one name
everywhere (notebooks, profiles, commands, the embedder itself). FlagEmbedding's other spellings
(``--embedder_name_or_path``, ``--embedder_query_max_length``, ``--fp16`` ...) are translated at the
edges: :data:`helpers.common.cli.FLAG_SPELLINGS`. A stage may give a field another default
(training embeds its eval batch 32 at a time) with :func:`helpers.common.cli.retune`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from helpers.common.cli import arg
from helpers.common.devices import DeviceArgs
from helpers.common.prompts import ICL_EXAMPLE_FORMAT, ICL_QUERY_FORMAT, ICL_SUFFIX

MODEL_CLASSES = ("decoder-only-icl", "decoder-only-base", "encoder-only-base")
# FlagEmbedding's default query_instruction_format per class
DEFAULT_QUERY_FORMAT = {"decoder-only-icl": ICL_QUERY_FORMAT,
                        "decoder-only-base": "Instruct: {}\nQuery: {}",
                        "encoder-only-base": "{}{}"}


@dataclass(kw_only=True)
class EmbedderArgs(DeviceArgs):
    model_name_or_path: str = field(metadata={"help": "embedder: demo:<alias>, a Hugging Face folder, a merged "
                                              "model or a LoRA adapter folder", "resume": True})
    embedder_model_class: str = arg("decoder-only-icl", "decoder-only-icl | decoder-only-base | encoder-only-base")
    pooling_method: Optional[str] = arg(None, "last_token | mean | cls; None: last_token for decoders, the folder's "
                                        "own (1_Pooling) or cls for encoders")
    normalize_embeddings: bool = arg(True, "L2-normalise embeddings", before=True)
    query_instruction_for_retrieval: Optional[str] = arg(None, "global instruction; None: none (a row's prompt "
                                                         "overrides it where use_row_prompts)")
    use_row_prompts: Optional[bool] = arg(None, "rows' prompts override the global instruction; None: the class "
                                          "default (decoders yes, encoders no)")
    query_instruction_format: Optional[str] = arg(None, "format(instruction, query); None: the class default "
                                                  "(<instruct>{}\\n<query>{} for icl); a literal \\n is a newline")
    icl_suffix_str: str = arg(ICL_SUFFIX, "decoder-only-icl: the query suffix")
    examples_for_task: Optional[str] = arg(None, "examples.json of the data stage: in-context examples before each "
                                           "query (decoder-only-icl); None: none")
    examples_number: int = arg(1, "in-context examples per query (same construct first)")
    examples_instruction_format: str = arg(ICL_EXAMPLE_FORMAT, "format(instruction, query, response) of an example",
                                           before=ICL_EXAMPLE_FORMAT)
    query_max_len: int = arg(512, "query tokens (examples, suffix and EOS included)")
    passage_max_len: int = arg(512, "passage tokens (EOS included)")
    embedder_batch_size: int = arg(64, "texts per forward pass (CUDA out of memory: retried at 3/4)", resume=False)
    load_in_4bit: bool = arg(False, "4-bit base through bitsandbytes (CUDA only): a 7B model on one 16 GB T4")
    base_model: Optional[str] = arg(None, "an adapter folder's base model at another path than its "
                                    "adapter_config.json names", before=None)
    share_prefix: bool = arg(True, "decoders: the tokens all texts of a batch start with (the instruction) run once "
                             "and are shared through the key/value cache; the same embeddings, checked against "
                             "the plain forward on the first batch; in training the prefix's LoRA dropout mask is "
                             "the batch's (False: every row runs in full)", resume=False)
    embedding_cache: Optional[str] = arg(None, "folder of embeddings already computed, keyed by the model's files, "
                                         "the settings and the token ids: a step that embeds the same texts with "
                                         "the same model reads them (a run's steps share one); None: no cache",
                                         resume=False)

    def __post_init__(self):
        super().__post_init__()
        if self.embedder_model_class not in MODEL_CLASSES:
            raise ValueError(f"embedder_model_class {self.embedder_model_class!r} unknown; choose one of {MODEL_CLASSES}")
        if self.decoder and self.pooling_method not in (None, "last_token"):
            raise ValueError(f"pooling_method {self.pooling_method!r}: decoder-only embedders pool "
                             "the last token (pooling_method last_token), as FlagEmbedding requires")
        if self.examples_for_task and self.embedder_model_class != "decoder-only-icl":
            raise ValueError("examples_for_task (in-context examples) needs embedder_model_class decoder-only-icl")
        from helpers.data.formatting import check_format       # before any file is read or model loaded
        if self.query_instruction_format is not None:
            check_format("query_instruction_format", self.query_instruction_format, 2)
        check_format("examples_instruction_format", self.examples_instruction_format, 3)
        for name in ("query_max_len", "passage_max_len", "embedder_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def decoder(self) -> bool:
        return self.embedder_model_class.startswith("decoder")
