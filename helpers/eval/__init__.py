"""Retrieval evaluation (notebook 04): MAP@k / Recall@k (metrics), paired bootstrap intervals (paired),
ranking and scoring that mining and training share (retrieval), the evaluate command (evaluate), several
models side by side (compare), figures (plots), the Kaggle submission (submission), and the teacher's
re-ranking of the student's top k (rerank_eval, notebook 02a).
"""
