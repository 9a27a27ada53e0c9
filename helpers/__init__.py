"""Helpers for the Eedi reranker-to-embedder distillation notebooks: all logic lives here.

Stage commands (``python -m helpers.<name>``; the notebooks call the same functions):
  prepare_data        00: Eedi CSVs -> corpus / train / test queries, examples, stats
  hn_mine             01: hard-negative mining (FlagEmbedding's hn_mine flags)
  add_reranker_score  02: LLM reranker "Yes"-logit teacher scores, resumable
  kd_finetune         03: LoRA + knowledge distillation, per-epoch retrieval metrics
  evaluate            04: metrics, rankings and comparisons of embedders
  submission          04: Kaggle submission.csv from test.csv
  train_reranker      02a: a teacher: "Yes"-logit LLM reranker (LoRA) or cross-encoder (LoRA or full)
  rerank_eval         02a: does the teacher re-order the student's own top k better? (paired interval)
  demo_data           generator of the bundled demo dataset (demo_templates: its question types)

Pieces:
  data, splits                 Eedi CSV loading and query rows; seeded splits, ICL examples file
  embedder, formatting,        embedding models and FlagEmbedding's ICL query formatting;
  pooling, search, mining      pooling; inner-product search (faiss/torch); negative sampling
  reranker, rerank_inputs,     reranker classes; token layout; plain and fast scoring paths;
  rerank_paths, rerank_*       resume progress file; teacher statistics
  losses, train_data, train,   InfoNCE + KD losses; group batches; the generic training loop;
  fast_lora, launch,           fused CPU LoRA; torchrun launcher; FlagEmbedding's fine-tuning flags;
  seed_flags, kd_report        per-epoch table and loss curve
  metrics, paired, plots,      MAP@k / Recall@k / MRR; paired bootstrap intervals; matplotlib figures;
  demo_report, notebook        demo teacher-vs-student table; notebook Args from the parameters cell
  io_utils, cli                JSONL with file:line errors and atomic writes; command-line plumbing
  models, devices              offline model aliases (demo:...); device and dtype by hardware
  prompts                      default query template, instruction and reranker prompt
  offline_install, memory_plan Kaggle: install an attached wheels dataset; GPU memory estimates
"""
__version__ = "0.1.0"
