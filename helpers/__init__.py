"""Helpers for the Eedi reranker-to-embedder distillation notebooks: all logic lives here.

The tree is the pipeline; imports flow one way (common -> kaggle -> data -> embed -> rerank -> eval
-> mine -> train; demo sits beside it and nothing imports it). Map: docs/architecture.md.

  common/  cli, io_utils, devices, models, prompts, notebook,  plumbing every stage uses; the GPU
           memory                                             memory plan (the stages' check)
  kaggle/  offline_install, env, inputs                       wheels install, on Kaggle?
  data/    eedi, splits, formatting, prepare_data             00: CSVs -> corpus / queries / examples
  embed/   args, embedder, pooling, search                    the embedder block (EmbedderArgs), models, search
  rerank/  reranker, inputs, paths, progress, stats,          02: teacher "Yes"-logit scores
           add_reranker_score
  eval/    metrics, paired, retrieval, evaluate, compare,     04: metrics, paired intervals, figures,
           plots, submission, rerank_eval                     submission; 02a: teacher vs student
  mine/    mining, hn_mine                                    01: hard-negative mining
  train/   losses, groups, loop, fast_lora, launch,           03: LoRA + KD; 02a: reranker teacher
           seed_flags, kd_finetune, kd_report, train_reranker
  demo/    generate, templates, report                        the bundled demo dataset
  notebook.py  setup(), args_from                            the notebooks' first call (nothing else imports it)

Stage commands: ``python -m helpers.<package>.<command>`` (the notebooks call the same functions):
  data.prepare_data, mine.hn_mine, rerank.add_reranker_score, train.train_reranker,
  eval.rerank_eval, train.kd_finetune, eval.evaluate, eval.submission, demo.generate.
"""
__version__ = "0.2.0"
