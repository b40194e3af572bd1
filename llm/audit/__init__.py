"""Memorization audit: exposure and extraction of planted canaries, verbatim memorization of training documents.

Reads a model (any checkpoint layout, through its consolidated weights) and a prepared data folder, so it
sits above llm.train beside llm.align. launch/audit.py is the command.
"""
