"""Deduplication: exact (content hash), near-duplicate (MinHash LSH) and exact-substring
(suffix array), all keeping one canonical copy chosen independently of input order."""
