"""Query-side text and token formatting of DESIGN.md section 4 (FlagEmbedding's rules).

Pure functions, shared by mining (inference) and training (ICL queries at train time):

* :func:`instructed_query`: ``query_instruction_format.format(instruction, query)``; a literal
  backslash-n in the format means a newline; no instruction -> the query unchanged.
* :func:`uses_row_prompts` / :func:`row_instruction`: a row's non-empty ``prompt`` overrides the
  global instruction, for model classes that use row prompts (decoders by default; encoders only
  when asked); :func:`describe_instruction` says which instruction was used, for the log.
* :func:`format_example` / :func:`examples_prefix`: in-context examples, each
  ``<instruct>{}\\n<query>{}\\n<response>{}``, joined by blank lines, followed by a blank line.
* :func:`select_examples`: examples for one query from examples.json: same construct first, then
  same subject, then any; never the query itself; deterministic (seeded stable hash).
* :func:`tokenize_icl_queries`: FlagEmbedding's ICL truncation rule (truncate the instructed query
  to ``max_length - len('<s>') - len(suffix + '</s>')`` tokens without special tokens, decode,
  wrap as prefix + query + suffix, tokenize again with special tokens).
* :func:`tokenize_texts`: plain texts (passages, non-ICL queries), truncated with special tokens.
Both tokenizers take ``append_eos``: append the EOS id once when the tokenizer itself did not.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Sequence

from helpers.common.prompts import ICL_EXAMPLE_FORMAT, ICL_QUERY_FORMAT, ICL_SUFFIX, unescape

__all__ = ["instructed_query", "uses_row_prompts", "row_instruction", "describe_instruction", "join_examples", "format_example", "examples_prefix",
           "select_examples", "tokenize_icl_queries", "tokenize_texts", "ICL_QUERY_FORMAT",
           "ICL_EXAMPLE_FORMAT", "ICL_SUFFIX"]


def instructed_query(query: str, instruction: Optional[str], fmt: str = ICL_QUERY_FORMAT) -> str:
    """FlagEmbedding's ``get_detailed_instruct``: ``fmt.format(instruction, query)``.

    With no instruction (None) the query is returned unchanged, as FlagEmbedding does.
    """
    if instruction is None:
        return query
    fmt = unescape(fmt)
    if fmt.count("{}") != 2:
        raise ValueError(f"query_instruction_format {fmt!r} must contain exactly two '{{}}' "
                         "(instruction, then query)")
    return fmt.format(instruction, query)


def uses_row_prompts(model_class: str, use_row_prompts: Optional[bool] = None) -> bool:
    """Whether rows' ``prompt`` fields count; ``None``: the model class's default.

    Decoder embedders are instruction-following (the data stage writes the retrieval instruction
    into every row's prompt for them); ``encoder-only-base`` models are used without an
    instruction unless asked (FlagEmbedding's encoder default, and what sentence-transformers
    gives for the same model), so their default is False. Mining, training and evaluation all
    call this one rule.
    """
    if use_row_prompts is None:
        return not str(model_class).startswith("encoder")
    return bool(use_row_prompts)


def row_instruction(row: dict, default: Optional[str], use_row_prompts: bool = True) -> Optional[str]:
    """A row's ``prompt`` (when a non-empty string, and ``use_row_prompts``) overrides the global
    instruction ``default``."""
    p = row.get("prompt") if use_row_prompts and isinstance(row, dict) else None
    return p if isinstance(p, str) and p.strip() else default


def describe_instruction(rows: Sequence, default: Optional[str], use_row_prompts: bool) -> str:
    """One log line's worth: which instruction(s) the queries of ``rows`` get."""
    used: dict[Optional[str], int] = {}
    for r in rows:
        i = row_instruction(r, default, use_row_prompts) if isinstance(r, dict) else default
        used[i] = used.get(i, 0) + 1
    parts = [f"{n} x " + ("no instruction" if i is None else repr(i if len(i) <= 80 else i[:77] + "..."))
             for i, n in sorted(used.items(), key=lambda kv: -kv[1])[:3]]
    more = f" (+{len(used) - 3} more)" if len(used) > 3 else ""
    src = "rows' prompts, else the global instruction" if use_row_prompts else "the global instruction only (row prompts ignored)"
    return f"query instruction from {src}: " + "; ".join(parts) + more


def load_examples(path) -> dict:
    """examples.json (00_prepare_data's) read and checked before any model loads: an object whose
    ``all`` is a list and whose ``by_construct`` / ``by_subject`` map ids to lists of examples, each
    example an object with string ``query`` and ``response``. A bad file: one InputError naming it."""
    import json
    from pathlib import Path
    from helpers.common.io_utils import InputError
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "examples_for_task", "file does not exist")
    try:
        ex = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(path, None, None, f"not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputError(path, e.lineno, None, f"not JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(ex, dict):
        raise InputError(path, None, None, f"expected a JSON object with all / by_construct / by_subject, "
                         f"got {type(ex).__name__}")
    tiers = [("all", ex.get("all", []))]
    for name in ("by_construct", "by_subject"):
        d = ex.get(name, {})
        if not isinstance(d, dict):
            raise InputError(path, None, name, f"expected an object of id -> examples, got {type(d).__name__}")
        tiers += [(f"{name}.{k}", v) for k, v in d.items()]
    for name, tier in tiers:
        if not isinstance(tier, list):
            raise InputError(path, None, name, f"expected a list of examples, got {type(tier).__name__}")
        for i, e in enumerate(tier):
            if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("query", "response")):
                raise InputError(path, None, f"{name}[{i}]", "an example must be an object with string "
                                 "'query' and 'response'")
    return ex


def check_format(name: str, fmt: str, fields: int) -> None:
    """A str.format template with exactly ``fields`` ``{}`` (after unescaping), or one ValueError naming it."""
    if unescape(fmt).count("{}") != fields:
        raise ValueError(f"{name} {fmt!r} must contain exactly {fields} '{{}}' "
                         f"({'instruction, then query' if fields == 2 else 'instruction, query, response'})")


def format_example(instruction: str, query: str, response: str,
                   fmt: str = ICL_EXAMPLE_FORMAT) -> str:
    return unescape(fmt).format(instruction, query, response)


def examples_prefix(examples: Sequence[dict], default_instruction: Optional[str],
                    fmt: str = ICL_EXAMPLE_FORMAT) -> str:
    """``'\\n\\n'.join(formatted examples) + '\\n\\n'``, or ``''`` without examples.

    Each example is a dict with ``query``, ``response`` and optionally ``instruct`` (else the
    default instruction), as FlagEmbedding's ``set_examples``.
    """
    return join_examples([format_example(e.get("instruct", default_instruction), e.get("query", ""),
                                         e.get("response", ""), fmt) for e in examples])


def join_examples(parts: Sequence[str]) -> str:
    """Formatted examples -> the prefix before a query: joined and ended by blank lines."""
    return "".join(p + "\n\n" for p in parts)


def _stable_key(seed: int, qid: str, eid: str) -> str:
    return hashlib.sha1(f"{seed}\x00{qid}\x00{eid}".encode("utf-8")).hexdigest()


def select_examples(row: dict, examples: dict, n: int = 1, seed: int = 0) -> list[dict]:
    """Pick ``n`` in-context examples for ``row`` from examples.json.

    Tiers: ``by_construct[row.construct_id]``, then ``by_subject[row.subject_id]``, then
    ``all``. Within a tier the order is a stable hash of (seed, query id, example id), so the
    choice is deterministic whatever PYTHONHASHSEED is, yet varies between queries. An example
    with the row's own ``query_id`` or identical query text is never chosen; duplicates across
    tiers are skipped.
    """
    if n <= 0 or not examples:
        return []
    qid = str(row.get("query_id", ""))
    qtext = row.get("query")
    tiers = [examples.get("by_construct", {}).get(str(row.get("construct_id")), []),
             examples.get("by_subject", {}).get(str(row.get("subject_id")), []),
             examples.get("all", [])]
    chosen, seen = [], set()
    for tier in tiers:
        ranked = sorted(tier, key=lambda e: _stable_key(seed, qid, str(e.get("query_id", e.get("query", "")))))
        for e in ranked:
            eid = str(e.get("query_id", ""))
            key = eid or e.get("query")
            if (eid and eid == qid) or e.get("query") == qtext or key in seen:
                continue
            seen.add(key)
            chosen.append(e)
            if len(chosen) == n:
                return chosen
    return chosen


def _eos_fix(ids: list[int], eos_id: Optional[int], append_eos: bool) -> list[int]:
    if append_eos and eos_id is not None and (not ids or ids[-1] != eos_id):
        ids = ids + [eos_id]
    return ids


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int,
                   append_eos: bool = False) -> list[list[int]]:
    """Token ids of plain texts with special tokens, truncated to ``max_length`` (EOS included)."""
    if not texts:
        return []
    room = max_length - 1 if append_eos else max_length
    enc = tokenizer(list(texts), truncation=True, max_length=room)["input_ids"]
    return [_eos_fix(list(ids), tokenizer.eos_token_id, append_eos) for ids in enc]


def tokenize_icl_queries(tokenizer, texts: Sequence[str], max_length: int,
                         prefixes: Sequence[str] | str = "", suffix: str = ICL_SUFFIX,
                         append_eos: bool = False) -> list[list[int]]:
    """FlagEmbedding ``ICLLLMEmbedder.encode_queries_single_device`` tokenization.

    ``texts`` are the instructed queries; ``prefixes`` the examples prefix (one string for all,
    or one per text). The query alone is cut to ``max_length - len('<s>') - len(suffix+'</s>')``
    tokens (no special tokens) and decoded; the text ``prefix + query + suffix`` is tokenized
    again with special tokens, truncated at
    ``(len(prefix) + len(suffix) + max_length + 8) // 8 * 8 + 8``.
    """
    if not texts:
        return []
    if isinstance(prefixes, str):
        prefixes = [prefixes] * len(texts)
    if len(prefixes) != len(texts):
        raise ValueError(f"tokenize_icl_queries: {len(prefixes)} prefixes for {len(texts)} texts")
    len_1 = len(tokenizer("<s>", add_special_tokens=False)["input_ids"])
    len_2 = len(tokenizer(f"{suffix}</s>", add_special_tokens=False)["input_ids"])
    room = max_length - len_1 - len_2
    if room <= 0:
        raise ValueError(f"query_max_length {max_length} leaves no room for the query "
                         f"(suffix and markers take {len_1 + len_2} tokens)")
    cut = tokenizer(list(texts), truncation=True, max_length=room, add_special_tokens=False)["input_ids"]
    decoded = tokenizer.batch_decode(cut)
    suffix_len = len(tokenizer(suffix, add_special_tokens=False)["input_ids"])
    # group by prefix so each distinct prefix is measured once
    prefix_len = {p: len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in set(prefixes)}
    wrapped = [p + d + suffix for p, d in zip(prefixes, decoded)]
    by_max: dict[int, list[int]] = {}
    for i, p in enumerate(prefixes):
        new_max = (prefix_len[p] + suffix_len + max_length + 8) // 8 * 8 + 8
        by_max.setdefault(new_max, []).append(i)
    out = [None] * len(texts)
    for new_max, idx in by_max.items():
        room2 = new_max - 1 if append_eos else new_max
        enc = tokenizer([wrapped[i] for i in idx], truncation=True, max_length=room2)["input_ids"]
        for i, ids in zip(idx, enc):
            out[i] = _eos_fix(list(ids), tokenizer.eos_token_id, append_eos)
    return out
