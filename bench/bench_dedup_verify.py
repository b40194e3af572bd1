"""What the exact-Jaccard re-check of MinHash candidates (dedup.minhash.verify) changes, and costs.

    python bench/bench_dedup_verify.py [--corpus data/raw/python_docs.jsonl] [--web-root DIR ...]
                                       [--out bench/results_dedup_verify.json]

Runs launch/prepare_data.py's pipeline twice per (corpus, config), verify off (FineWeb) and on,
and reports the near-duplicate drops, the candidates the re-check kept back, the Jaccard (MinHash
estimate and exact) of the drops to the document they name, and the cluster step's time.

Corpora: the bundled one (documentation), and a web-like one built here without network from the
HTML on this machine (by default the Rust toolchains' docs under ~/.rustup, stable and nightly, else
/usr/share/doc): each page's visible text with its navigation, sidebar and footer kept in, as a
crawl's text extraction would; two releases of the same site give the near-duplicates a crawl has.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_pipeline.config import load_data_config  # noqa: E402
from data_pipeline import final_stages, pipeline  # noqa: E402
from data_pipeline.dedup import cluster as cluster_mod  # noqa: E402
from data_pipeline.dedup.minhash import MinHashConfig, MinHasher  # noqa: E402
from data_pipeline.dedup.verify import exact_jaccard  # noqa: E402
from data_pipeline.readers import read_jsonl  # noqa: E402
from data_pipeline.report import read_drops  # noqa: E402
from data_pipeline.tokenizer import train_tokenizer  # noqa: E402

_BLOCK = {"p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "br", "pre", "section", "nav", "header",
          "footer", "dt", "dd", "table", "ul", "ol", "title", "summary", "details"}


class _Text(HTMLParser):
    """Visible text of a page, one line per block element (scripts and styles skipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(ln.split()) for ln in "".join(self.parts).split("\n"))
        return "\n".join(ln for ln in lines if ln)


def html_text(path: Path) -> str:
    p = _Text()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    return p.text()


def default_web_roots() -> list[Path]:
    rust = sorted(Path.home().glob(".rustup/toolchains/*/share/doc/rust/html"))
    return rust or [Path("/usr/share/doc")]


def build_web_corpus(roots: list[Path], out: Path, per_root: int, seed: int = 0) -> int:
    """Up to ``per_root`` pages (sampled by relative path, the same sample under every root) as jsonl."""
    rels = None
    for root in roots:
        mine = {str(p.relative_to(root)) for p in root.rglob("*.html") if p.stat().st_size > 2048}
        rels = mine if rels is None else rels & mine
    pick = sorted(rels)
    random.Random(seed).shuffle(pick)
    pick = sorted(pick[:per_root])
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for k, root in enumerate(roots):
            for rel in pick:
                text = html_text(root / rel)
                if text.strip():
                    f.write(json.dumps({"id": f"r{k}/{rel}", "text": text}) + "\n")
                    n += 1
    return n


def planted_copies(corpus: Path, out: Path, n: int = 120, seed: int = 0) -> int:
    """The corpus plus, for each of its first ``n`` documents, a copy with 1%, 3%, 10% or 30% of its
    words replaced (Jaccard of word 5-grams from about 0.95 down to about 0.2), as in
    bench_data_pipeline.py: the bundled corpus has no near duplicates of its own."""
    rng, docs = random.Random(seed), list(read_jsonl(corpus))
    with open(out, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "text": d.text}) + "\n")
        for k, d in enumerate(docs[:n]):
            frac = (0.01, 0.03, 0.10, 0.30)[k % 4]
            ws = d.text.split(" ")
            for pos in rng.sample(range(len(ws)), int(frac * len(ws))):
                ws[pos] = f"zz{rng.randint(0, 10**6)}"
            f.write(json.dumps({"id": f"{d.id}#copy{frac}", "text": " ".join(ws)}) + "\n")
    return len(docs) + min(n, len(docs))


def _timed(module, name: str, timings: dict):
    real = getattr(module, name)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            timings[name + "_s"] = round(time.perf_counter() - t, 3)

    setattr(module, name, wrapper)
    return real


def prepare(corpus: Path, config: Path, out: Path, verify: bool, tokenizer: Path) -> dict:
    """Ingest, dedup and cluster (the tokenizer is given, so the cluster step only clusters)."""
    cfg = load_data_config(config, [f"inputs=[{corpus}]", f"output={out}", "progress=false",
                                    f"tokenize.tokenizer={tokenizer}", f"dedup.minhash.verify={str(verify).lower()}"])
    timings = {}
    real = (_timed(final_stages, "run_cluster", timings), _timed(cluster_mod, "near_duplicates", timings))
    try:
        t0 = time.perf_counter()
        for stage in ("ingest", "dedup"):
            pipeline.run(cfg, stage)
        t1 = time.perf_counter()
        pipeline.run(cfg, "cluster")
    finally:
        final_stages.run_cluster, cluster_mod.near_duplicates = real
    near = [r for r in read_drops(out) if r["reason"] == "minhash_dedup.near_duplicate"]
    stages = json.loads((out / "work" / "cluster.done").read_text())["stages"]
    j = sorted(r["jaccard"] for r in near if r["jaccard"] is not None)
    res = {"docs_in_dedup": stages["exact_dedup"]["docs_in"] if "exact_dedup" in stages else None,
           "near_duplicate_drops": len(near),
           "drops_below_threshold": sum(r["value"] is not None and r["value"] < r["threshold"] for r in near),
           "min_estimated_jaccard": j[0] if j else None,
           "ingest_and_edges_s": round(t1 - t0, 2), "run_cluster_s": timings.get("run_cluster_s"),
           "near_duplicates_s": timings.get("near_duplicates_s", 0.0)}
    if verify:
        ex = sorted(r["exact_jaccard"] for r in near)
        res["min_exact_jaccard"] = ex[0] if ex else None
    return res, near


def exact_to_named(out: Path, near: list[dict]) -> list[float]:
    """The exact Jaccard of each near-duplicate drop to the document its row names, from the texts
    that reached dedup (work/ingest), on the shingles the pipeline hashes."""
    hasher, texts = MinHasher(MinHashConfig()), {}
    for path in (out / "work" / "ingest").glob("shard_*[0-9].jsonl"):
        for line in open(path, encoding="utf-8"):
            rec = json.loads(line)
            texts[rec["id"]] = rec["text"]
    return sorted(float(exact_jaccard(hasher.shingle_hashes(texts[r["id"]]),
                                      [hasher.shingle_hashes(texts[r["duplicate_of"]])])[0]) for r in near)


def compare(name: str, corpus: Path, config: Path, tmp: Path, tokenizer: Path) -> dict:
    off, near_off = prepare(corpus, config, tmp / f"{name}_off", False, tokenizer)
    ex = exact_to_named(tmp / f"{name}_off", near_off)
    off.update(exact_jaccard_to_named_min=round(ex[0], 4) if ex else None,
               exact_jaccard_to_named_below_0_5=sum(x < 0.5 for x in ex),
               exact_jaccard_to_named_below_0_75=sum(x < 0.75 for x in ex))
    on, near_on = prepare(corpus, config, tmp / f"{name}_on", True, tokenizer)
    kept_back = sorted({r["id"] for r in near_off} - {r["id"] for r in near_on})
    # What the unverified drops' exact Jaccard was: the verified run measured it for every candidate it kept.
    families = {}
    for r in near_off:
        fam = r["id"].split("/", 2)[1] if r["id"].count("/") >= 2 else r["id"].rsplit("/", 1)[0]
        families[fam] = families.get(fam, 0) + 1
    top = sorted(families.items(), key=lambda kv: -kv[1])[:3]
    return {"corpus": str(corpus), "config": str(config.relative_to(ROOT)), "verify_off": off, "verify_on": on,
            "kept_back_by_verify": len(kept_back), "kept_back_examples": kept_back[:5],
            "unverified_drops_by_family": top,
            "run_cluster_cost_s": round(on["run_cluster_s"] - off["run_cluster_s"], 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT / "data/raw/python_docs.jsonl"))
    ap.add_argument("--web-root", nargs="*", default=None, help="folders of .html pages (default: see above)")
    ap.add_argument("--pages", type=int, default=1200, help="pages sampled per web root")
    ap.add_argument("--out", default=str(ROOT / "bench/results_dedup_verify.json"))
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        roots = [Path(r) for r in args.web_root] if args.web_root else default_web_roots()
        tokenizer = train_tokenizer((d.text for d in read_jsonl(args.corpus)), tmp / "tok", 1000)
        planted = tmp / "docs_planted.jsonl"
        results["docs_planted_corpus"] = {"documents": planted_copies(Path(args.corpus), planted)}
        web = tmp / "web.jsonl"
        t = time.perf_counter()
        n = build_web_corpus(roots, web, args.pages)
        results["web_corpus"] = {"roots": [str(r) for r in roots], "documents": n,
                                 "build_s": round(time.perf_counter() - t, 1)}
        runs = [("docs_default", Path(args.corpus), ROOT / "configs/data/default.yaml"),
                ("docs_planted_default", planted, ROOT / "configs/data/default.yaml"),
                ("web_default", web, ROOT / "configs/data/default.yaml"),
                ("web_web", web, ROOT / "configs/data/web.yaml")]
        for name, corpus, config in runs:
            results[name] = compare(name, corpus, config, tmp, tokenizer)
            print(name, json.dumps(results[name], indent=1), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
