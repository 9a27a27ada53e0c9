"""Retrieval evaluation (notebook 04): MAP@k / Recall@k (metrics), paired bootstrap intervals (paired),
the evaluate command (evaluate), figures (plots), the Kaggle submission (submission), and the teacher's
re-ranking of the student's top k (rerank_eval, notebook 02a).
"""
