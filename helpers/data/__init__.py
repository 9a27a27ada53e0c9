"""Eedi data in: strict CSV loading (eedi), seeded splits and the ICL examples file (splits), the prepare
stage (prepare_data, notebook 00), and FlagEmbedding's ICL query formatting (formatting).
"""
