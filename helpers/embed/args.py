"""The embedder block: one dataclass of the flags that say how texts become embeddings.

Mining (:class:`helpers.mine.hn_mine.HnMineArgs`), training and its per-epoch evaluation
(:class:`helpers.train.kd_finetune.KDArgs`), evaluation (:class:`helpers.eval.evaluate.EvalArgs`)
and submission (:class:`helpers.eval.submission.SubmissionArgs`) all extend :class:`EmbedderArgs`,
so a concept has one name everywhere (notebooks, profiles, commands) and one
:meth:`EmbedderArgs.embedder_config`, which builds the :class:`~helpers.embed.embedder.EmbedderConfig`
every stage embeds with. FlagEmbedding's other spellings (``--embedder_name_or_path``,
``--embedder_query_max_length``, ``--fp16`` ...) are accepted: :data:`helpers.common.cli.FLAG_SPELLINGS`.
A stage may give a field another default (training embeds its eval batch 32 at a time) by
declaring it again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from helpers.common.prompts import ICL_EXAMPLE_FORMAT, ICL_SUFFIX


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(kw_only=True)
class EmbedderArgs:
    model_name_or_path: str = field(metadata={
        "help": "embedder: demo:<alias>, a Hugging Face folder, a merged model or a LoRA adapter folder"})
    embedder_model_class: str = _f("decoder-only-icl", "decoder-only-icl | decoder-only-base | encoder-only-base")
    pooling_method: Optional[str] = _f(None, "last_token | mean | cls; None: last_token for decoders, the folder's "
                                       "own (1_Pooling) or cls for encoders")
    normalize_embeddings: bool = _f(True, "L2-normalise embeddings")
    query_instruction_for_retrieval: Optional[str] = _f(None, "global instruction; None: none (a row's prompt "
                                                        "overrides it where use_row_prompts)")
    use_row_prompts: Optional[bool] = _f(None, "rows' prompts override the global instruction; None: the class "
                                         "default (decoders yes, encoders no)")
    query_instruction_format: Optional[str] = _f(None, "format(instruction, query); None: the class default "
                                                 "(<instruct>{}\\n<query>{} for icl); a literal \\n is a newline")
    icl_suffix_str: str = _f(ICL_SUFFIX, "decoder-only-icl: the query suffix")
    examples_for_task: Optional[str] = _f(None, "examples.json of the data stage: in-context examples before each "
                                          "query (decoder-only-icl); None: none")
    examples_number: int = _f(1, "in-context examples per query (same construct first)")
    examples_instruction_format: str = _f(ICL_EXAMPLE_FORMAT, "format(instruction, query, response) of an example")
    query_max_len: int = _f(512, "query tokens (examples, suffix and EOS included)")
    passage_max_len: int = _f(512, "passage tokens (EOS included)")
    embedder_batch_size: int = _f(64, "texts per forward pass (CUDA out of memory: retried at 3/4)")
    devices: Optional[str] = _f(None, "cpu, cuda:0, '0,1' (None: cuda:0 if there is one, else cpu)")
    use_fp16: bool = _f(True, "half precision on CUDA: fp16 below compute capability 8, bf16 from 8; CPU: fp32")
    load_in_4bit: bool = _f(False, "4-bit base through bitsandbytes (CUDA only): a 7B model on one 16 GB T4")
    base_model: Optional[str] = _f(None, "an adapter folder's base model at another path than its "
                                   "adapter_config.json names")
    trust_remote_code: bool = _f(False, "allow model code from the model folder")
    share_prefix: bool = _f(True, "decoders: the tokens all texts of a batch start with (the instruction) run once "
                            "and are shared through the key/value cache; the same embeddings, checked against "
                            "the plain forward on the first batch; in training the prefix's LoRA dropout mask is "
                            "the batch's (False: every row runs in full)")
    embedding_cache: Optional[str] = _f(None, "folder of embeddings already computed, keyed by the model's files, "
                                        "the settings and the token ids: a step that embeds the same texts with "
                                        "the same model reads them (a run's steps share one); None: no cache")

    def embedder_config(self, **override):
        """The :class:`~helpers.embed.embedder.EmbedderConfig` of these flags (``override``: its
        own field names, e.g. ``pooling_method`` resolved at load, ``show_progress``)."""
        from helpers.embed.embedder import EmbedderConfig
        return EmbedderConfig(**{**dict(
            model_name_or_path=self.model_name_or_path, model_class=self.embedder_model_class,
            pooling_method=self.pooling_method, normalize=self.normalize_embeddings,
            query_instruction_for_retrieval=self.query_instruction_for_retrieval,
            use_row_prompts=self.use_row_prompts, query_instruction_format=self.query_instruction_format,
            suffix=self.icl_suffix_str, add_examples_for_task=bool(self.examples_for_task),
            examples_file=self.examples_for_task, examples_number=self.examples_number,
            examples_instruction_format=self.examples_instruction_format,
            query_max_length=self.query_max_len, passage_max_length=self.passage_max_len,
            batch_size=self.embedder_batch_size, devices=self.devices, use_fp16=self.use_fp16,
            load_in_4bit=self.load_in_4bit, base_model=self.base_model,
            trust_remote_code=self.trust_remote_code, share_prefix=self.share_prefix,
            embedding_cache=self.embedding_cache), **override})
