"""Evaluation of our checkpoints with lm-evaluation-harness (the optional `eval` extra); see launch/evaluate.py."""
