"""Teacher scores (notebook 02): reranker classes (reranker), exact token layout (inputs), plain and
fast scoring paths (paths), resumable progress file (progress), score statistics (stats), and the
stage command (add_reranker_score).
"""
