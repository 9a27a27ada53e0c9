"""Training (notebooks 02a, 03): InfoNCE + KD losses (losses), group batches (groups), the generic
LoRA / full fine-tuning loop (loop), fused CPU LoRA (fast_lora), torchrun launcher (launch),
FlagEmbedding's fine-tuning flags (seed_flags), the embedder stage (kd_finetune) and its report
(kd_report), and the reranker teacher (train_reranker).
"""
