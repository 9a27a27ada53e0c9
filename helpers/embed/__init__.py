"""Embedding models: args (the embedder block), loading (model, tokenizer, EOS rule, pooling file),
forward (the one embedding forward; prefix: its shared-prefix variant), pooling, embedder (texts ->
embeddings: batching, devices, cache), cache, and exact inner-product search (search).
"""
