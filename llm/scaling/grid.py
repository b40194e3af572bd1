"""The grid of an isoFLOP sweep: for each FLOP budget C, model sizes spread in log space around a law's N_opt(C).

This is Chinchilla's Approach 2 (Hoffmann et al. 2022, arXiv:2203.15556, §3.2) and PaLM 2's scaling study
(arXiv:2305.10403, §2): several sizes per budget, each trained for D = C / 6N tokens with its cosine schedule
ending at its own last token, then a parabola in log N per budget (llm/scaling/fit.py).

How a point is made:
  * targets N_i = N_opt(C) · 10^(spread · t_i), t_i evenly spaced in [-1, 1]; N_opt from the current law
    (llm.scaling.laws, or a previous sweep's law.json), N counting all parameters (Chinchilla's convention);
  * the shape is the shape designer's (llm/shape.py) for N_i, with tp_degrees=(1,) and pp_degrees=(1,): a
    sweep runs on one device, and those allow the finest width steps; its STANDARD rules, or SMALL ones (32-wide
    heads and steps) for sweeps of models small enough for a CPU;
  * D = C / 6N from the exact N of that shape (C = 6ND, Kaplan et al. 2020 §2.1, as in Chinchilla), so every
    point of a budget spends the same 6ND FLOPs (attention is not counted; PaLM App. B's count is recorded
    beside it);
  * batch size, peak LR and schedule from plan.py's rule (llm.scaling.plan.spec_for_shape: DeepSeek LLM 2024's
    B(C) and η(C) at the budget C, cosine over exactly D to 10%).

A budget the shape designer cannot serve is handled so (the notes say which, and the report repeats them):
  * the smallest targets are below the smallest buildable shape (a small vocabulary's embeddings alone can
    exceed N_opt): the whole grid is shifted up, keeping its spacing, so that it starts at the smallest shape.
    The fitted vertex may then lie below the sampled sizes; law.json says so (vertex_inside);
  * fewer than MIN_SIZES distinct shapes, or a point with fewer than MIN_STEPS optimizer steps: the budget is
    refused with a ValueError naming the smallest budget that would work.
No torch here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from llm.config import ModelConfig
from llm.scaling.plan import Spec, spec_for_shape
from llm.scaling.laws import ParametricLaw, PowerLawFrontier, compute_optimal
from llm.shape import STANDARD, ShapeRules, TargetTooLarge, count_params, design_shape
from typed_yaml import ConfigError

MIN_SIZES = 3
"""A parabola needs three sizes per budget (llm/scaling/fit.py)."""
MIN_STEPS = 4
"""A point with fewer optimizer steps than this has no schedule to speak of (warmup, then cosine)."""
DEFAULT_SPREAD_DEX = 0.5
"""Half-width of a budget's grid in log10 N: ±0.5 dex spans 10×, about Chinchilla's Fig. 3 profiles."""


@dataclass(frozen=True)
class SweepPoint:
    """One run of the sweep: a shape trained on budget `flops` for D = C / 6N tokens."""

    name: str
    """Directory name under DIR/points/, unique and stable for this budget and shape."""
    budget_index: int
    flops: float
    n_params_target: float
    spec: Spec
    """What plan.py would train for this shape and budget: N, D, batch, LR, steps (llm/scaling/plan.py)."""

    @property
    def n_params(self) -> int:
        return self.spec.n_params

    @property
    def n_tokens(self) -> int:
        return self.spec.n_tokens

    @property
    def model(self) -> ModelConfig:
        return self.spec.model


@dataclass
class SweepGrid:
    budgets: list[float]
    points: list[SweepPoint]
    law: str
    """Name of the law whose N_opt the grid was centred on."""
    spread_dex: float
    notes: list[str] = field(default_factory=list)
    """One sentence per budget that was shifted or had shapes merged: how the grid departs from the plain rule."""


def _shape(target: float, vocab_size: int, seq_len: int, tie_embeddings: bool, rules: ShapeRules) -> ModelConfig:
    return design_shape(target, vocab_size=vocab_size, seq_len=seq_len, tp_degrees=(1,), pp_degrees=(1,),
                        tie_embeddings=tie_embeddings, rules=rules)


def smallest_shape_params(vocab_size: int, seq_len: int, tie_embeddings: bool = False,
                          rules: ShapeRules = STANDARD) -> int:
    """Exact N of the smallest shape the designer builds. It accepts a target iff the target is at least that N,
    so bisection finds it without restating the designer's rules here."""
    lo, hi = 1.0, 1.0e6
    while True:
        try:
            _shape(hi, vocab_size, seq_len, tie_embeddings, rules)
            break
        except TargetTooLarge:
            raise
        except ValueError:
            lo, hi = hi, hi * 10
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        try:
            _shape(mid, vocab_size, seq_len, tie_embeddings, rules)
            hi = mid
        except ValueError:
            lo = mid
    return count_params(_shape(hi, vocab_size, seq_len, tie_embeddings, rules))


def _label(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def design_grid(budgets: list[float], sizes_per_budget: int, law: ParametricLaw | PowerLawFrontier,
                vocab_size: int, seq_len: int, spread_dex: float = DEFAULT_SPREAD_DEX, tie_embeddings: bool = False,
                min_steps: int = MIN_STEPS, rules: ShapeRules = STANDARD) -> SweepGrid:
    """The points of an isoFLOP sweep over `budgets` (6ND FLOPs), `sizes_per_budget` sizes each (see the module
    docstring for the rules and what happens at the edges).

    rules: the shape designer's conventions (llm.shape.STANDARD, or SMALL for CPU-scale models).
    Raises ValueError for budgets that are not positive, repeated, or that cannot give `MIN_SIZES` distinct shapes
    with at least `min_steps` steps each, and for sizes_per_budget < MIN_SIZES or spread_dex <= 0.
    """
    if sizes_per_budget < MIN_SIZES:
        raise ConfigError(f"--sizes-per-budget {sizes_per_budget}: a parabola needs at least {MIN_SIZES} sizes")
    if not spread_dex > 0:
        raise ConfigError(f"--spread {spread_dex} must be positive (half-width of the grid in log10 N)")
    if not budgets:
        raise ConfigError("give at least two budgets (--budgets 1e13 3e13)")
    for c in budgets:
        if not (c > 0 and math.isfinite(c)):
            raise ConfigError(f"budget {c} must be a positive finite number of FLOPs")
    ordered = sorted(float(c) for c in budgets)
    for lo, hi in zip(ordered, ordered[1:]):
        if hi < lo * 1.1:  # fit.py groups runs whose 6ND agree within 5%: budgets this close would merge
            raise ConfigError(f"budgets {lo:.3g} and {hi:.3g} are within 10% of each other: space them further apart")
    if len(ordered) < 2:
        raise ConfigError(f"one budget ({ordered[0]:.3g}) gives one parabola and no power law: give at least two")
    floor = smallest_shape_params(vocab_size, seq_len, tie_embeddings, rules)
    grid = SweepGrid(budgets=ordered, points=[], law=law.name, spread_dex=spread_dex)
    offsets = [spread_dex * (2 * i / (sizes_per_budget - 1) - 1) for i in range(sizes_per_budget)]
    for b, c in enumerate(ordered):
        n_opt, _ = compute_optimal(c, law)
        targets = [n_opt * 10 ** t for t in offsets]
        if targets[0] < floor:
            shift = floor / targets[0]
            targets = [max(floor, t * shift) for t in targets]  # max: no round-off below the floor
            grid.notes.append(
                f"budget C={c:.3g}: {law.name} puts N_opt at {_label(n_opt)}, and the grid's smallest size "
                f"({_label(n_opt * 10 ** offsets[0])}) is below the smallest shape ({floor:,} parameters at "
                f"vocab_size={vocab_size}); the grid was shifted up {shift:.3g}x to start there, so its centre is "
                f"{_label(n_opt * shift)}")
        shapes: dict[tuple, tuple[float, ModelConfig]] = {}
        for t in targets:
            try:
                cfg = _shape(t, vocab_size, seq_len, tie_embeddings, rules)
            except TargetTooLarge as e:
                raise ConfigError(f"budget C={c:.3g}: size {_label(t)} is past the largest shape ({e.largest:,} "
                                 "parameters); lower the budget or --spread") from None
            key = (cfg.n_layers, cfg.d_model, cfg.d_ff)
            shapes.setdefault(key, (t, cfg))
        if len(shapes) < len(targets):
            grid.notes.append(f"budget C={c:.3g}: {len(targets)} target sizes gave {len(shapes)} distinct shapes "
                              "(the designer's width steps are coarse at this size)")
        if len(shapes) < MIN_SIZES:
            raise ConfigError(f"budget C={c:.3g} gives only {len(shapes)} distinct shapes: widen --spread or raise "
                             "the budget")
        for t, cfg in sorted(shapes.values(), key=lambda tc: count_params(tc[1])):
            n = count_params(cfg)
            try:
                spec = spec_for_shape(c, cfg, law, t)
            except ValueError as e:
                raise ConfigError(f"budget C={c:.3g}: {e}") from None
            if spec.total_steps < min_steps:
                need = 6.0 * n * min_steps * spec.global_batch_size * seq_len
                raise ConfigError(f"budget C={c:.3g} gives the {_label(n)}-parameter point only {spec.total_steps} "
                                 f"optimizer steps (minimum {min_steps}); raise the budget to about {need:.2g} or "
                                 "lower --spread")
            grid.points.append(SweepPoint(name=f"c{c:.3g}_n{n}".replace("+", ""), budget_index=b, flops=c,
                                          n_params_target=t, spec=spec))
    return grid
