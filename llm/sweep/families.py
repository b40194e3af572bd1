"""Model families of a sweep: each isoFLOP point trained once per family, the family's model.moe applied on top of
the point's shape (launch/sweep.py --family NAME [KEY=VALUE ...]; points.py `family_runs` lists the runs).

    --family dense --family moe8 experts=8 top_k=2

A family is a name and the keys of model.moe (llm/config/model.py MoEConfig: experts, top_k, expert_d_ff,
shared_experts, every_k_layers, aux_loss_coef, z_loss_coef); no keys is the dense model (model.moe absent). Every
family shares the grid: the budgets and the shapes the designer made for each size (its d_model, layers, heads,
d_ff). What changes with the family is the feed-forward of the blocks, and so the FLOPs each token costs: a point of
budget C trains D = C / (6N FLOPs per token) tokens, the FLOPs per token of the family's own model from
llm/cost/flops.py `flops_per_token(cfg, "6N")` (the sweep's one FLOPs count, through llm/scaling/plan.py
`spec_for_shape`), so every family's points of a budget spend the same compute and the family with more active
parameters per token trains on fewer tokens. Its N (the fit's, `n_params_active` in sweep.json) is that count / 6:
the parameters a token passes through, which for a dense model is every parameter.

No torch here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import yaml

import typed_yaml
from llm.config import ModelConfig
from llm.config.model import MoEConfig
from llm.cost.flops import flops_per_token
from llm.scaling.grid import MIN_STEPS, SweepPoint
from llm.scaling.plan import spec_for_shape
from llm.sweep import UserError
from typed_yaml import ConfigError

DENSE = "dense"
"""The family a sweep without --family trains: each point's shape as the designer made it."""


@dataclass(frozen=True)
class Family:
    """One model family of a sweep."""

    name: str
    """A word of letters, digits, '-' and '_': it prefixes the family's run names (DIR/points/NAME_c..._n...)."""
    moe: dict | None = None
    """The family's model.moe keys as given (e.g. {"experts": 8, "top_k": 2}); None: dense."""

    def model(self, shape: ModelConfig) -> ModelConfig:
        """`shape` with this family's model.moe applied (validated); ConfigError naming the family and the key."""
        if self.moe is None:
            return shape
        where = f"--family {self.name}"
        moe = typed_yaml.from_dict(MoEConfig, dict(self.moe), "model.moe", where)
        cfg = dataclasses.replace(shape, moe=moe)
        try:
            cfg.validate()
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        return cfg

    def to_json(self) -> dict:
        return {"name": self.name, "moe": self.moe}


def parse_families(specs: list[list[str]] | None) -> list[Family]:
    """Families from launch/sweep.py's --family arguments (each [NAME, KEY=VALUE, ...], values read as YAML
    scalars); [] without any. UserError naming the first wrong one: a repeated or odd name, a key without '='."""
    families: list[Family] = []
    for spec in specs or []:
        name, *pairs = spec
        if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
            raise UserError(f"--family {name!r}: a name of letters, digits, '-' and '_' (it prefixes run names)")
        if any(f.name == name for f in families):
            raise UserError(f"--family {name} is given twice: one name per family")
        moe = {}
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or not key:
                raise UserError(f"--family {name} {pair}: write model.moe's settings as KEY=VALUE, e.g. experts=8")
            moe[key.removeprefix("moe.")] = yaml.safe_load(value)
        families.append(Family(name, moe or None))
    if len(families) == 1:
        raise UserError(f"--family {families[0].name} alone: give two or more families to compare (a sweep without "
                        "--family trains the base config's model)")
    return families


def family_point(point: SweepPoint, family: Family, law) -> SweepPoint:
    """`point` trained as `family`: the same budget and shape, the family's model, and D, batch, LR and schedule for
    that model (spec_for_shape; `law`, the grid's, only predicts the loss recorded in the spec). The dense family
    keeps the point as the grid made it. ConfigError when the family's model is invalid or its run would have
    fewer than MIN_STEPS steps."""
    if family.moe is None:
        return point
    cfg = family.model(point.model)
    spec = spec_for_shape(point.flops, cfg, law, point.n_params_target)
    if spec.total_steps < MIN_STEPS:
        raise ConfigError(f"--family {family.name}: budget C={point.flops:.3g} gives point {point.name} only "
                          f"{spec.total_steps} optimizer steps (minimum {MIN_STEPS}); raise the budget")
    return dataclasses.replace(point, spec=spec)


def active_params(cfg: ModelConfig) -> int:
    """The N of C = 6ND for `cfg`: its 6N FLOPs per token / 6 (llm/cost/flops.py), the parameters a token uses."""
    return round(flops_per_token(cfg, "6N") / 6.0)
