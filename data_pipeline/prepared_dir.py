"""A prepared output folder: the paths of its parts (`PreparedDir`, the layout data_pipeline/pipeline.py's docstring
draws) and its manifest, which refuses to resume into a folder prepared with different settings.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.config import PrepareConfig, to_dict
from data_pipeline.errors import DataError
from data_pipeline.shards import write_json_atomic


@dataclass
class PreparedDir:
    """The paths inside a prepared output folder (the layout above); not llm.cost.layout.Layout, a parallel layout."""

    root: Path

    @property
    def work(self) -> Path: return self.root / "work"
    @property
    def ingest(self) -> Path: return self.work / "ingest"
    @property
    def sigs(self) -> Path: return self.work / "sigs"
    @property
    def dropped(self) -> Path: return self.root / "dropped"
    @property
    def tokens(self) -> Path: return self.root / "tokens"


def check_manifest(cfg: PrepareConfig, layout: PreparedDir) -> None:
    """Refuse to resume into a folder prepared with different settings (shards would not match)."""
    body = {k: v for k, v in to_dict(cfg).items() if k not in ("progress", "shards")}
    if not cfg.canaries.enabled:  # folders prepared before canaries existed keep their digest
        del body["canaries"]
    mh = body["dedup"]["minhash"]
    if not mh["verify"]:  # and so do those prepared before the re-check existed
        del mh["verify"], mh["jaccard_threshold"]
    body["docs_per_shard"] = cfg.shards.docs_per_shard
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    path = layout.work / "manifest.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old["config_sha256"] != digest:
            key = first_difference(old["config"], json.loads(json.dumps(body)))
            raise DataError(f"{layout.root} was prepared with a different config ({key} differs); "
                            "use a new --output folder, delete this one, or restore the setting")
    else:
        write_json_atomic(path, {"config_sha256": digest, "config": body})


def first_difference(old: object, new: object, key: str = "") -> str:
    """The dotted key of the first setting that differs between two config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return first_difference(old.get(k), new.get(k), f"{key}.{k}" if key else k)
    return key or "the config"
