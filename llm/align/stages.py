"""The registry of the chain's stages, by name: what launch/ and the chain dispatch on (llm/align/stage.py says
what a stage declares). The names are llm/align/config.py's STAGES, in the same order."""
from __future__ import annotations

from llm.align import base, dpo, ppo, rl, rm, sft
from llm.align.stage import Stage

REGISTRY: dict[str, Stage] = {s.name: s for s in (base.STAGE, sft.STAGE, rm.STAGE, ppo.STAGE, dpo.STAGE,
                                                 rl.STAGE)}
