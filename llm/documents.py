"""Where the documents packed into a sample begin: the document ids and rotary positions of document masking.

data_pipeline's encoder closes every document with EOS, and a packed sample is a window of that stream. Under
`data.document_mask` a segment begins at every EOS — the EOS acts as the next document's BOS, as GPT-2's
<|endoftext|> separator does — and at the sample's first token (a document cut by the window). A token then
attends only within its segment (llm/model.py `document_mask`) at a position counted from the segment's start, so
training a packed sample equals training each segment alone: [EOS, d₁ … dₙ] with targets [d₁ … dₙ, EOS]. This is
Megatron-LM's `reset_attention_mask` + `reset_position_ids`, and the intra-document masking of Llama 3's
long-context training (Dubey et al. 2024, arXiv:2407.21783, §3.2).
"""
from __future__ import annotations

import torch


def segments(inputs: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(doc_ids, positions) of input tokens (batch, seq): the segment each token belongs to (0, 1, ... per row) and
    its rotary position within it."""
    starts = inputs == eos_id
    doc_ids = starts.long().cumsum(1)
    index = torch.arange(inputs.shape[1], device=inputs.device).expand_as(inputs)
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(1).values
    return doc_ids, index - first
