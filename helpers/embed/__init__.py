"""Embedding models (embedder: three classes, one forward), pooling, and exact inner-product search (search).
"""
