"""The per-shard text stages: read -> normalise -> filter -> decontaminate -> dedup signatures.

One ingest shard is ``docs_per_shard`` consecutive raw records of one input file. For each shard
this writes (under ``work/ingest``) the kept documents as jsonl ``{uid, id, text}``, a small
``.ids.jsonl`` ``[uid, id, words, snippet]`` used by the dedup step to name duplicates, the dedup
signature files (band hashes, and each document's full MinHash signature for the Jaccard
estimates), ``dropped/<shard>.jsonl``, and last the ``.done`` marker with the stage counts.
"""

from __future__ import annotations


import numpy as np

from data_pipeline.decontaminate import Decontaminator
from data_pipeline.dedup.buckets import write_full_signatures, write_signatures
from data_pipeline.dedup.exact import content_hash, id_rank
from data_pipeline.dedup.minhash import MinHasher
from data_pipeline.errors import DataError
from data_pipeline.filters import evaluate_filters
from data_pipeline.normalize import normalize_text
from data_pipeline.readers import ReadStats, read_documents
from data_pipeline.report import StageStats, drop_row, progress, snippet
from data_pipeline.shards import AtomicJsonl, is_done, mark_done, my_units, shard_name, write_json_atomic

UID_FILE_SHIFT = 40  # uid = file index << 40 | record position: 2**40 records per file


def make_uid(file_index: int, position: int) -> int:
    return (file_index << UID_FILE_SHIFT) | position


def shard_of_uid(uid: int, docs_per_shard: int) -> str:
    return shard_name(uid >> UID_FILE_SHIFT, (uid & ((1 << UID_FILE_SHIFT) - 1)) // docs_per_shard)


class ShardWriter:
    """Collects one shard's kept documents, drops and signatures, and commits them atomically."""

    def __init__(self, cfg, layout, name: str, minhasher: MinHasher | None, source: str = ""):
        self.cfg, self.layout, self.name, self.minhasher, self.source = cfg, layout, name, minhasher, source
        self.kept = AtomicJsonl(layout.ingest / f"{name}.jsonl")
        self.ids = AtomicJsonl(layout.ingest / f"{name}.ids.jsonl")
        self.dropped = AtomicJsonl(layout.dropped / f"{name}.jsonl")
        self.stats = {s: StageStats() for s in ("read", "normalize", "filter", "decontaminate")}
        self.exact, self.bands, self.sigs, self.ranks, self.uids = [], [], [], [], []

    def drop(self, doc_id: str, reason: str, index: int | None = None, text: str | None = None, **extra) -> None:
        self.dropped.write(drop_row(doc_id, reason, self.source, index, text, **extra))

    def keep(self, uid: int, doc_id: str, text: str, words: int) -> None:
        self.kept.write({"uid": uid, "id": doc_id, "text": text})
        self.ids.write([uid, doc_id, words, snippet(text)])
        self.uids.append(uid)
        self.ranks.append(id_rank(doc_id))
        if self.cfg.dedup.exact.enabled:
            self.exact.append(content_hash(text))
        if self.minhasher is not None:
            sig = self.minhasher.signature(text)
            self.sigs.append(sig.astype(np.uint32))
            self.bands.append(self.minhasher.band_hashes(sig))

    def commit(self, file_index: int, chunk: int) -> None:
        uids, ranks = np.asarray(self.uids, np.uint64), np.asarray(self.ranks, np.uint64)
        if self.cfg.dedup.exact.enabled:
            write_signatures(self.layout.sigs / "exact", self.name, np.asarray(self.exact, np.uint64)[:, None],
                             ranks, uids, self.cfg.dedup.exact.num_buckets)
        if self.minhasher is not None:
            mh = self.cfg.dedup.minhash
            bands = np.asarray(self.bands, np.uint64).reshape(len(self.uids), mh.bands)
            write_signatures(self.layout.sigs / "minhash", self.name, bands, ranks, uids, mh.num_buckets)
            full = np.asarray(self.sigs, np.uint32).reshape(len(self.uids), mh.bands * mh.rows)
            write_full_signatures(self.layout.sigs / "full", self.name, uids, full)
        for f in (self.kept, self.ids, self.dropped):
            f.close()
        mark_done(self.layout.ingest / f"{self.name}.done",
                  {"file": file_index, "chunk": chunk, "stages": {k: v.to_dict() for k, v in self.stats.items()}})


def _process(w: ShardWriter, doc, uid: int, filters, decon: Decontaminator | None) -> None:
    cfg = w.cfg
    words_raw = len(doc.text.split())
    w.stats["read"].record(words_raw, words_raw, None)
    text = normalize_text(doc.text, cfg.normalize)
    words = len(text.split())
    if not text:
        w.stats["normalize"].record(words_raw, 0, "normalize.empty")
        w.drop(doc.id, "normalize.empty", doc.index, doc.text)
        return
    w.stats["normalize"].record(words_raw, words, None)
    judged = text
    text, drop = evaluate_filters(text, filters)
    w.stats["filter"].record(words, len(text.split()), drop.reason if drop else None)
    if drop is not None:
        w.drop(doc.id, drop.reason, doc.index, judged, **drop.evidence())
        return
    words = len(text.split())
    hit = decon.match(text) if decon else None
    if decon:
        w.stats["decontaminate"].record(words, words, "decontaminate.eval_overlap" if hit else None)
    if hit is not None:
        w.drop(doc.id, "decontaminate.eval_overlap", doc.index, text, eval_id=hit)
        return
    w.keep(uid, doc.id, text, words)


def ingest_file(cfg, layout, file_index: int, path: str, filters, decon, minhasher,
                on_doc=lambda: None) -> list[str]:
    """Process every not-yet-done shard of one input file, calling ``on_doc()`` after each document read;
    returns the file's shard names."""
    size = cfg.shards.docs_per_shard
    rstats = ReadStats()
    docs = read_documents(path, cfg.reader.format, cfg.reader.text_field, cfg.reader.id_field,
                          cfg.reader.on_error, rstats)
    names, writer, chunk = [], None, -1

    def finish() -> None:
        # Malformed records skipped since the shard's previous document belong to this shard
        # (those before a file's first document to its first shard). A shard done in an earlier
        # run counted them already: they are dropped with the writer it does not have.
        nonlocal writer
        if writer is not None:
            for msg in rstats.errors:
                writer.stats["read"].docs_in += 1
                writer.stats["read"].dropped["read.malformed"] += 1
                writer.drop(msg.split(": ", 1)[0], "read.malformed", error=msg)
            writer.commit(file_index, chunk)
            writer = None
        rstats.errors.clear()

    for doc in docs:
        c = doc.index // size
        if c != chunk:
            if chunk >= 0:
                finish()
            chunk, name = c, shard_name(file_index, c)
            names.append(name)
            if not is_done(layout.ingest / f"{name}.done"):
                writer = ShardWriter(cfg, layout, name, minhasher, str(path))
        if writer is not None:
            _process(writer, doc, make_uid(file_index, doc.index), filters, decon)
        on_doc()
    if not names:
        _no_documents(path, rstats)
    finish()
    write_json_atomic(layout.ingest / f"file_{file_index:05d}.done", {"path": path, "shards": names})
    return names


def _no_documents(path: str, rstats: ReadStats) -> None:
    if rstats.skipped:
        raise DataError(f"{path}: all {rstats.skipped} records are malformed and were skipped "
                        f"(first: {rstats.errors[0]})")
    raise DataError(f"{path} holds no document (no record, or only blank lines)")


def run_ingest(cfg, layout, task: tuple[int, int]) -> None:
    """This task's share of the input files (round-robin by file)."""
    filters = cfg.filters.active()
    decon = Decontaminator(cfg.decontaminate) if cfg.decontaminate.eval_paths else None
    minhasher = MinHasher(cfg.dedup.minhash) if cfg.dedup.minhash.enabled else None
    todo = [(i, path) for i, path in my_units(list(enumerate(cfg.inputs)), *task)
            if not is_done(layout.ingest / f"file_{i:05d}.done")]
    # The total is in files: a file's document count is unknown until it has been read through.
    bar, docs = progress("ingest", len(todo), cfg.progress, unit="file"), 0

    def on_doc() -> None:
        nonlocal docs
        docs += 1
        bar.set_postfix_str(f"{docs} docs", refresh=False)  # shown at the bar's next redraw

    try:
        for file_index, path in todo:
            ingest_file(cfg, layout, file_index, path, filters, decon, minhasher, on_doc)
            bar.update()
    finally:
        bar.close()  # before an error is printed, so that it does not land on the bar's line
