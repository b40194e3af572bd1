"""The memorization audit on the bundled corpus, in two parts, with one figure for a model card.

    python bench/bench_audit.py [--work runs/bench_audit] [--out bench/results_audit.json]
        [--steps 200] [--small] [--dedup-steps 200] [--dedup-model small|debug] [--planted-per-bucket 8]
        [--dedup-corpus-docs 100] [--skip-canaries] [--skip-dedup]

1. Canaries: launch/prepare_data.py (configs/data/default.yaml, canaries.enabled=true: 10 canaries of each kind
   per bucket of 1, 4, 16, 64 copies, as many held out), launch/pretrain.py on configs/debug.yaml as configured
   (debug mode, one process; --small: a 1.4M-parameter model), launch/audit.py on the last checkpoint.
   Expected: held-out canaries at chance (1/ln 2 ≈ 1.44 bits, no extraction), inserted ones rising with copies.
2. Deduplication on vs off (Lee et al. 2022, arXiv:2107.06499): passages of corpus documents are planted 1, 4,
   16 and 64 times into a copy of the raw corpus (--planted-per-bucket distinct passages per bucket, as many
   never planted as the baseline; their source documents are removed from the copy, so the text occurs only as
   planted). The copy is prepared twice, dedup on (exact + MinHash, the default config) and off, with one
   tokenizer, both trained identically, and each planted passage is tested as PaLM 2 does (arXiv:2305.10403
   Sec. 4.7: a k = 50-token prompt, the next 50 tokens greedy and exact) beside the per-token agreement
   and the target's bits per token after the prompt.
   --dedup-corpus-docs keeps that many of the other documents (seeded), so that the planted copies are seen a
   measurable number of times within a CPU budget.

Each step is skipped when its output exists, so an interrupted bench resumes. Writes --out (JSON) and the figure
beside it (.png).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMALL = ["model.n_layers=2", "model.d_model=128", "model.n_heads=4", "model.n_kv_heads=2", "model.d_ff=384",
         "model.seq_len=128", "train.micro_batch_size=16"]
DEDUP_OFF = ["dedup.exact.enabled=false", "dedup.minhash.enabled=false"]
REPEATS = (1, 4, 16, 64)
K = 50  # PaLM 2 Sec. 4.7: 50-token prompt, 50-token target
PASSAGE_WORDS = (70, 140)  # ~2.3 tokens a word on this corpus: 2k = 100 tokens fit with room
PLANT_BEFORE = 0.8  # planted copies go among the first 80% of the records, clear of the 5% validation tail


def run(*cmd: str) -> float:
    print("+", " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run([sys.executable, *cmd], cwd=ROOT, check=True)
    return time.time() - start


def pretrain(data: Path, out_dir: Path, steps: int, extra: list[str]) -> Path:
    """Train configs/debug.yaml on ``data`` (skipped when its last checkpoint exists); that checkpoint."""
    last = out_dir / "checkpoints" / f"step_{steps:08d}"
    if not last.is_dir():
        run("launch/pretrain.py", "--config", "configs/debug.yaml", f"data.paths=[{data / 'data'}]",
            f"data.tokenizer={data / 'tokenizer.model'}", f"out_dir={out_dir}", f"train.max_steps={steps}",
            *extra)
    return last


def wall_s(out_dir: Path, until_step: int) -> float:
    """Training wall time to ``until_step`` from metrics.jsonl's unix times: first to last row, stretched over
    the steps before the first logged one at the mean rate (evaluations and checkpoints included)."""
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["step"] <= until_step]
    steps = [r for r in rows if "loss" in r]
    span = rows[-1]["time"] - steps[0]["time"]
    return float(span * rows[-1]["step"] / (rows[-1]["step"] - steps[0]["step"]))


def canary_part(args) -> dict:
    data, out_dir = args.work / "data", args.work / ("small" if args.small else "debug")
    if not (data / "report.json").is_file():
        run("launch/prepare_data.py", "--input", args.corpus, "--output", str(data), "--no-progress",
            "canaries.enabled=true")
    last = pretrain(data, out_dir, args.steps, SMALL if args.small else [])
    audit = args.out.with_name(f"{args.out.stem}_canaries_step{args.steps}.json")  # launch/audit.py's whole output
    if not audit.is_file():
        run("launch/audit.py", "--checkpoint", str(last), "--data", str(data), "--out", str(audit),
            "--candidates", str(args.candidates))
    full = json.loads(audit.read_text())
    keep = ("repeats", "copies_in_train", "exposure_mean", "exposure_sampled_mean", "extraction_rate")
    from llm.config import read_saved_config
    schedule = read_saved_config(last / "config.yaml")["train"]["max_steps"]
    return {"model": "small (1.44M)" if args.small else "configs/debug.yaml", "steps": args.steps,
            "schedule_steps": schedule, "train_wall_s": wall_s(out_dir, args.steps), "candidates": args.candidates,
            "buckets": {k: {f: b[f] for f in keep} | {"kinds": b["kinds"]} for k, b in full["buckets"].items()},
            "exposure": full["exposure"], "memorization": full["memorization"], "canaries": full["canaries"]}


def passages(records: list[dict], n: int, rng: np.random.RandomState) -> list[tuple[int, str]]:
    """``n`` (record index, passage) pairs, one per source document: runs of whole paragraphs of
    PASSAGE_WORDS words that the pipeline's normalisation leaves as they are and its filters keep."""
    from data_pipeline.config import load_data_config
    from data_pipeline.filters import apply_filters
    from data_pipeline.normalize import normalize_text
    cfg = load_data_config(ROOT / "configs" / "data" / "default.yaml", validate=False)
    out = []
    for i in rng.permutation(len(records)):
        paras = [p for p in records[i]["text"].split("\n\n") if p.strip()]
        start = rng.randint(len(paras))
        text, words = [], 0
        for p in paras[start:]:
            text.append(p)
            words += len(p.split())
            if words >= PASSAGE_WORDS[0]:
                break
        passage = "\n\n".join(text)
        if (PASSAGE_WORDS[0] <= words <= PASSAGE_WORDS[1] and normalize_text(passage, cfg.normalize) == passage
                and apply_filters(passage, cfg.filters.active())[1] is None):
            out.append((int(i), passage))
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} of {n} passages found; lower --planted-per-bucket")


def planted_corpus(args, path: Path) -> dict:
    """Write the corpus copy with planted passages to ``path``; the plan (passages, buckets, copies)."""
    records = [json.loads(line) for line in Path(args.corpus).read_text().splitlines() if line.strip()]
    rng = np.random.RandomState(args.seed)
    chosen = passages(records, args.planted_per_bucket * (len(REPEATS) + 1), rng)
    plan = [{"id": f"planted_{j:03d}", "source": records[i]["id"], "text": text,
             "repeats": REPEATS[j // args.planted_per_bucket] if j < len(REPEATS) * args.planted_per_bucket else 0}
            for j, (i, text) in enumerate(chosen)]
    sources = {i for i, _ in chosen}
    rest = [r for i, r in enumerate(records) if i not in sources]
    if args.dedup_corpus_docs:
        rest = [rest[i] for i in sorted(rng.choice(len(rest), min(args.dedup_corpus_docs, len(rest)), False))]
    copies = [{"id": f"{p['id']}/copy{c}", "text": p["text"]} for p in plan for c in range(p["repeats"])]
    at = np.sort(rng.randint(0, int(len(rest) * PLANT_BEFORE) + 1, size=len(copies)))
    order = rng.permutation(len(copies))
    out, k = [], 0
    for n, r in enumerate(rest):
        while k < len(copies) and at[k] == n:
            out.append(copies[order[k]])
            k += 1
        out.append(r)
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return {"passages": plan, "corpus_documents": len(rest), "planted_documents": len(copies)}


def measure_planted(checkpoint: Path, data: Path, plan: list[dict]) -> list[dict]:
    """Copies of each planted passage in data.bin (train split) and its PaLM 2 memorization."""
    from data_pipeline.hf_tokenizer import load_tokenizer, tokenizer_file
    from data_pipeline.indexed import IndexedDataset
    from llm.audit.memorization import passage_memorization
    from llm.audit.run import load_model
    import torch
    model, valid_fraction, _ = load_model(checkpoint, torch.device("cpu"))
    tok = load_tokenizer(tokenizer_file(data))
    ds = IndexedDataset(data / "data")
    ends = np.cumsum(np.asarray(ds.sizes, dtype=np.int64))
    train_end = ds.num_tokens() - int(round(ds.num_tokens() * valid_fraction))
    key = lambda ids: hashlib.blake2b(np.asarray(ids, np.int64).tobytes(), digest_size=16).digest()  # noqa: E731
    found, in_train = Counter(), Counter()
    for i in range(len(ds)):
        h = key(ds[i][:-1])  # a document's tokens, then its EOD
        found[h] += 1
        in_train[h] += int(ends[i] <= train_end)
    ids = [[int(t) for t in tok.encode(p["text"])] for p in plan]
    rows = passage_memorization(model, ids, K, tok.eos_id)
    return [{"id": p["id"], "repeats": p["repeats"], "tokens": len(t), "copies_in_data": found[key(t)],
             "copies_in_train": in_train[key(t)], **r} for p, t, r in zip(plan, ids, rows)]


def by_repeats(rows: list[dict]) -> dict:
    out = {}
    for r in sorted({x["repeats"] for x in rows}):
        mine = [x for x in rows if x["repeats"] == r]
        out["held_out" if r == 0 else str(r)] = {
            "passages": len(mine), "copies_in_train": sum(x["copies_in_train"] for x in mine),
            "extracted": sum(x["extracted"] for x in mine),
            "extraction_rate": float(np.mean([x["extracted"] for x in mine])),
            "token_agreement_mean": float(np.mean([x["token_agreement"] for x in mine])),
            "target_bits_per_token_mean": float(np.mean([x["target_bits_per_token"] for x in mine]))}
    return out


def dedup_part(args) -> dict:
    work = args.work / "dedup"
    work.mkdir(parents=True, exist_ok=True)
    corpus, plan_file = work / "planted.jsonl", work / "plan.json"
    if not plan_file.is_file():
        plan_file.write_text(json.dumps(planted_corpus(args, corpus), indent=1) + "\n")
    plan = json.loads(plan_file.read_text())
    model = (SMALL if args.dedup_model == "small" else []) + [f"checkpoint.every={args.dedup_steps}",
                                                              "checkpoint.keep=1"]
    result = {"k": K, "model": "small (1.44M)" if args.dedup_model == "small" else "configs/debug.yaml",
              "steps": args.dedup_steps, "corpus_documents": plan["corpus_documents"],
              "planted_documents": plan["planted_documents"], "per_bucket": args.planted_per_bucket,
              "passage_source": "runs of whole paragraphs (70-140 words) of bundled-corpus documents, one per "
                                "document, their source documents removed from the corpus copy", "runs": {}}
    for name in ("on", "off"):
        data = work / f"data_{name}"
        if not (data / "report.json").is_file():
            tok = [] if name == "on" else ["--tokenizer", str(work / "data_on" / "tokenizer.model")]
            run("launch/prepare_data.py", "--input", str(corpus), "--output", str(data), "--no-progress", *tok,
                *([] if name == "on" else DEDUP_OFF))
        report = json.loads((data / "report.json").read_text())
        last = pretrain(data, work / f"train_{name}", args.dedup_steps, model)
        rows = measure_planted(last, data, plan["passages"])
        result["runs"][name] = {"tokens_in_data": report["tokens"], "documents_in_data": report["documents"],
                                "train_wall_s": wall_s(work / f"train_{name}", args.dedup_steps),
                                "by_repeats": by_repeats(rows), "passages": rows}
    return result


def draw_dedup(axes, dedup: dict) -> None:
    """The dedup row: planted passages' verbatim extraction, their target's bits per token after the prompt
    (graded: the model's surprise at the true continuation) and the copies left, on vs off."""
    ext_ax, bits_ax, copies_ax = axes
    reps = [str(r) for r in REPEATS]
    x = np.arange(len(reps))
    for j, (name, color) in enumerate((("off", "C3"), ("on", "C0"))):
        by = dedup["runs"][name]["by_repeats"]
        label = f"dedup {name}"
        ext_ax.plot(x, [100 * by[r]["extraction_rate"] for r in reps], "o-", color=color, label=label)
        bits_ax.plot(x, [by[r]["target_bits_per_token_mean"] for r in reps], "o-", color=color, label=label)
        ext_ax.axhline(100 * by["held_out"]["extraction_rate"], color=color, ls="--", lw=1,
                       label=f"never planted ({label})")
        bits_ax.axhline(by["held_out"]["target_bits_per_token_mean"], color=color, ls="--", lw=1,
                        label=f"never planted ({label})")
        per = [by[r]["copies_in_train"] / by[r]["passages"] for r in reps]
        bars = copies_ax.bar(x + (j - 0.5) * 0.38, per, 0.38, color=color, label=label)
        copies_ax.bar_label(bars, labels=[f"{c:g}" for c in per], fontsize="small")
    k, steps = dedup["k"], dedup["steps"]
    ext_ax.set(title=f"Planted passages: next {k} tokens verbatim (PaLM 2)", ylabel="passages extracted (%)",
               ylim=(-3, 103))
    bits_ax.set(title=f"Planted passages: surprise at tokens {k + 1}-{2 * k} after the prompt",
                ylabel="bits per token (lower: memorised)", ylim=(0, None))
    copies_ax.set(title="Copies left in the training data", ylabel="copies per passage", yscale="log")
    for ax in axes:
        ax.set_xticks(x, reps)
        ax.set_xlabel("copies planted in the raw corpus")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    ext_ax.legend(fontsize="small", title=f"{dedup['per_bucket']} passages a bucket; {dedup['model']}, {steps} steps",
                  title_fontsize="small")


def model_card_figure(canaries: dict | None, dedup: dict | None):
    """One figure: the canary audit's three panels above, the dedup comparison below (whichever exist)."""
    from llm.audit.figure import DPI, FIGSIZE, draw_audit
    import matplotlib.pyplot as plt
    rows = [r for r in (canaries, dedup) if r]
    fig, axes = plt.subplots(len(rows), 3, figsize=(FIGSIZE[0], FIGSIZE[1] * len(rows)), dpi=DPI,
                             layout="constrained", squeeze=False)
    if canaries:
        draw_audit(axes[0], canaries)
        steps = canaries["steps"]
        of = (f"step {steps} of {canaries['schedule_steps']}" if canaries["schedule_steps"] != steps
              else f"{steps} steps")
        axes[0][0].set_title(f"Canary exposure: {canaries['model']}, {of}")
    if dedup:
        draw_dedup(axes[-1], dedup)
    fig.suptitle("Memorization audit on the bundled corpus (bench/bench_audit.py)")
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(ROOT / "data" / "raw" / "python_docs.jsonl"))
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_audit")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results_audit.json")
    ap.add_argument("--small", action="store_true", help="canary part: the 1.4M-parameter model, not debug.yaml's")
    ap.add_argument("--steps", type=int, default=200, help="canary part's steps (debug.yaml's 200)")
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--dedup-steps", type=int, default=200)
    ap.add_argument("--dedup-model", choices=("small", "debug"), default="small")
    ap.add_argument("--planted-per-bucket", type=int, default=8)
    ap.add_argument("--dedup-corpus-docs", type=int, default=100, help="other corpus documents kept (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-canaries", action="store_true")
    ap.add_argument("--skip-dedup", action="store_true")
    args = ap.parse_args()
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results = {"canaries": old.get("canaries"), "dedup": old.get("dedup")}
    if not args.skip_canaries:
        results["canaries"] = canary_part(args)
    if not args.skip_dedup:
        results["dedup"] = dedup_part(args)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    model_card_figure(results.get("canaries"), results.get("dedup")).savefig(args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
