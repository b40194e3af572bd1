"""The spec layer: what to train, before any tensor exists (no torch).

`scaling` (Chinchilla approaches 1–3, Besiroglu 2024), `fit` (fit a law to your own isoFLOP runs), `shape`
(N → architecture with exact parameter counts), `flops` (6N and PaLM App. B FLOPs, MFU/HFU, accelerator
peaks) and `plan` (a budget → N, D, shape, schedule); for a cluster, `zero` (ZeRO model states),
`activations` (Korthikanti et al. 2022, and our block), `memory` (itemised peak per GPU), `layout` (a layout and
DeepSpeed's rules), `step_time` (MFU, communication, bubble), `layout_search` (the fastest layout that fits)
and `cluster` (its memory, time and cost).
"""
