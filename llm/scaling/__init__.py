"""What to train for a budget (no torch): scaling laws and the plan built on them.

`laws` (Chinchilla approaches 1–3, Besiroglu et al. 2024), `fit` (fit a law to your own isoFLOP runs: parabolas per
budget, the parametric L(N, D)), `law` (a sweep's law.json: read, write, check), `law_fit` (a sweep's runs →
law.json), `grid` (the isoFLOP grid of a sweep), `plan` (a budget → N, D, shape, batch, LR, schedule),
`plan_output` (its table and the run config it writes) and `plan_command` (the `plan` command, a layer above the
rest: it reads prepared data and times a CPU). What it costs on hardware is llm/cost/.
"""
