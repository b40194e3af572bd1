"""The hardware cost model: what a model of a given shape costs to train on given hardware (no torch).

`flops` (6N and PaLM App. B FLOPs per token, MFU/HFU, accelerator peaks), `zero` (ZeRO model states),
`activations` (Korthikanti et al. 2022, and our block), `memory` (itemised peak per GPU), `layout` (a parallel layout
and DeepSpeed's rules), `step_time` (MFU, communication, pipeline bubble), `layout_search` (the fastest layout that
fits) and `cluster` (its memory, time and cost). What to train is llm/scaling/; the shapes, llm/shape.py.
"""
