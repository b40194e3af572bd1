"""The stages after the per-document ones (data_pipeline/pipeline.py runs them in order): cluster (task 0: dedup
clusters, exact-substring removal, the tokenizer trained or copied), tokenize (the kept documents of each shard →
DIR/tokens/, in worker processes, data_pipeline/encode.py) and merge (task 0: DIR/data.bin/.idx, with the canaries'
copies when enabled, and report.json).
"""
from __future__ import annotations

import json
from collections import Counter

from data_pipeline import canaries
from data_pipeline.config import PrepareConfig
from data_pipeline.dedup.cluster import load_removals, run_cluster
from data_pipeline.dedup.substring import remove_repeats
from data_pipeline.encode import TokenizerPool, train_from_texts
from data_pipeline.errors import DataError
from data_pipeline.hf_tokenizer import copy_tokenizer, load_tokenizer, tokenizer_file
from data_pipeline.indexed import IndexedDataset, IndexedDatasetBuilder, dtype_for_vocab
from data_pipeline.ingest import UID_FILE_SHIFT, shard_of_uid
from data_pipeline.prepared_dir import PreparedDir
from data_pipeline.report import STAGES, StageStats, drop_row, merge_stage_dicts, ordered, progress
from data_pipeline.shards import AtomicJsonl, is_done, iter_jsonl, mark_done, my_units, read_done, write_json_atomic


def final_texts(cfg: PrepareConfig, layout: PreparedDir, shard: str, removals: dict, edits: dict):
    """The kept documents of one shard after dedup and substring edits, in order."""
    for rec in iter_jsonl(layout.ingest / f"{shard}.jsonl"):
        uid = rec["uid"]
        if uid in removals:
            continue
        text = edits.get(str(uid), rec["text"]) if edits else rec["text"]
        if text is not None:
            yield text


def substring_edits(layout: PreparedDir) -> dict:
    path = layout.work / "substring" / "edits.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _run_substring(cfg: PrepareConfig, layout: PreparedDir, shards: list[str], removals: dict) -> dict:
    """Exact-substring removal over the whole kept corpus (in memory; see dedup/substring.py)."""
    uids, ids, texts = [], [], []
    for shard in shards:
        for rec in iter_jsonl(layout.ingest / f"{shard}.jsonl"):
            if rec["uid"] not in removals:
                uids.append(rec["uid"]), ids.append(rec["id"]), texts.append(rec["text"])
    new = remove_repeats(texts, cfg.dedup.substring)
    s, edits = StageStats(), {}
    out = AtomicJsonl(layout.dropped / "substring.jsonl")
    for uid, doc_id, old, text in zip(uids, ids, texts, new):
        reason = None if text is not None else "substring_dedup.emptied"
        s.record(len(old.split()), len(text.split()) if text else 0, reason)
        if text is not old:
            edits[str(uid)] = text
        if reason:
            out.write(drop_row(doc_id, reason, cfg.inputs[uid >> UID_FILE_SHIFT], uid & ((1 << UID_FILE_SHIFT) - 1),
                               old, min_words_left=cfg.dedup.substring.min_words_left))
    out.close()
    write_json_atomic(layout.work / "substring" / "edits.json", edits)
    return s.to_dict()


def _check_kept(ingest: dict[str, StageStats], cluster: dict[str, dict]) -> None:
    """An empty result is a setting to change, not a dataset to write: say what dropped it all."""
    stages = {k: v for k, v in ingest.items() if v.docs_in}
    stages.update({k: StageStats.from_dict(v) for k, v in cluster.items()})
    last = [s for s in STAGES if s in stages][-1]
    if stages[last].docs_out:
        return
    drops = Counter()
    for s in stages.values():
        drops.update(s.dropped)
    top = ", ".join(f"{k}={v}" for k, v in drops.most_common(4))
    raise DataError(f"no document survived: of {stages['read'].docs_in} read, dropped {top}; check "
                    "reader.text_field and loosen the settings that dropped them (see configs/data/default.yaml)")


def stage_cluster(cfg: PrepareConfig, layout: PreparedDir, shards: list[str]) -> None:
    """Task 0 only: dedup clustering, substring removal, tokenizer (trained or copied)."""
    marker = layout.work / "cluster.done"
    if is_done(marker):
        return
    ingest = merge_stage_dicts([read_done(layout.ingest / f"{s}.done")["stages"] for s in shards])
    last = ingest["decontaminate"] if ingest["decontaminate"].docs_in else ingest["filter"]
    stats = run_cluster(cfg, layout, lambda u: shard_of_uid(u, cfg.shards.docs_per_shard),
                        (last.docs_out, last.words_out))
    removals = load_removals(layout)
    if cfg.dedup.substring.enabled:
        stats["substring_dedup"] = _run_substring(cfg, layout, shards, removals)
    _check_kept(ingest, stats)
    if cfg.tokenize.tokenizer:
        copy_tokenizer(cfg.tokenize.tokenizer, layout.root)
    else:
        edits = substring_edits(layout)
        texts = (t for s in shards for t in final_texts(cfg, layout, s, removals, edits))
        train_from_texts(texts, layout.root, cfg.tokenize)
    mark_done(marker, {"stages": stats})


def kept_documents(cfg: PrepareConfig, layout: PreparedDir, shards: list[str], removals: dict, edits: dict) -> int:
    """How many documents of ``shards`` reach the tokenizer (what ``final_texts`` will yield), from the counts
    already on disk: ingest's kept documents, less dedup removals and documents substring removal emptied."""
    names, size, kept = set(shards), cfg.shards.docs_per_shard, 0
    for shard in shards:
        stages = read_done(layout.ingest / f"{shard}.done")["stages"]
        kept += stages["decontaminate" if stages["decontaminate"]["docs_in"] else "filter"]["docs_out"]
    kept -= sum(1 for uid in removals if shard_of_uid(uid, size) in names)
    return kept - sum(1 for uid, text in edits.items() if text is None and shard_of_uid(int(uid), size) in names)


def stage_tokenize(cfg: PrepareConfig, layout: PreparedDir, shards: list[str], task) -> None:
    removals, edits = load_removals(layout), substring_edits(layout)
    todo = [s for s in my_units(shards, *task) if not is_done(layout.tokens / f"{s}.done")]
    if not todo:
        return
    bar = progress("tokenize", kept_documents(cfg, layout, todo, removals, edits), cfg.progress)
    try:
        with TokenizerPool(tokenizer_file(layout.root), cfg.tokenize) as pool:
            for shard in todo:
                docs, tokens = pool.write_shard(final_texts(cfg, layout, shard, removals, edits),
                                                layout.tokens / shard, bar.update)
                mark_done(layout.tokens / f"{shard}.done", {"docs": docs, "tokens": tokens})
    finally:
        bar.close()


def stage_merge(cfg: PrepareConfig, layout: PreparedDir, shards: list[str]) -> dict:
    """Concatenate token shards into DIR/data.bin/.idx (in shard order), with the canaries' copies
    among them when enabled (DIR/canaries.json lists them), and write report.json."""
    tok = load_tokenizer(tokenizer_file(layout.root))
    prefix = layout.root / "data"
    corpus_docs = sum(read_done(layout.tokens / f"{s}.done")["docs"] for s in shards)
    plan = canaries.build_plan(cfg.canaries, tok, corpus_docs) if cfg.canaries.enabled else None
    bar = progress("merge", corpus_docs + (plan["inserted_documents"] if plan else 0), cfg.progress)
    docs = tokens = 0
    corpus = (ds[i] for ds in (IndexedDataset(layout.tokens / s) for s in shards) for i in range(len(ds)))
    with IndexedDatasetBuilder(prefix, dtype_for_vocab(tok.vocab_size)) as builder:
        for ids in canaries.interleave(corpus, plan, tok.eos_id):
            builder.add_document(ids)
            docs += 1
            tokens += len(ids)
            bar.update()
    bar.close()
    if plan is not None:
        write_json_atomic(layout.root / canaries.SIDECAR, plan)
    stages = merge_stage_dicts([read_done(layout.ingest / f"{s}.done")["stages"] for s in shards])
    stages = {k: v for k, v in stages.items() if v.docs_in or k == "read"}
    stages.update({k: StageStats.from_dict(v) for k, v in read_done(layout.work / "cluster.done")["stages"].items()})
    last = stages[[s for s in STAGES if s in stages][-1]]
    planted = (plan["inserted_documents"], plan["inserted_tokens"]) if plan else (0, 0)
    stages["tokenize"] = StageStats(docs_in=last.docs_out, docs_out=docs - planted[0], words_in=last.words_out,
                                    words_out=last.words_out, tokens_out=tokens - planted[1])
    report = {"inputs": list(cfg.inputs), "stages": ordered(stages), "documents": docs, "tokens": tokens,
              "tokenizer": {"vocab_size": tok.vocab_size, "eod_id": tok.eos_id, "sha256": tok.fingerprint()},
              "shards": len(shards), "output_prefix": "data"}
    if plan is not None:
        report["canaries"] = canaries.summary(plan)
    write_json_atomic(layout.root / "report.json", report, sort_keys=False)  # keep stage order
    return report
