"""Drops a user can audit: every filter drop carries the value it measured and the threshold it
crossed; near duplicates name the nearest kept document with their Jaccard to it, and the exact
re-check (dedup.minhash.verify) keeps the members of a chain that are not near the kept ones;
``prepare_data.py inspect`` prints them; configs/data/web.yaml holds the papers' thresholds."""

import dataclasses
import json
from pathlib import Path

import pytest

from data_pipeline.config import DataConfigError, FiltersConfig, load_data_config
from data_pipeline.dedup.exact import id_rank
from data_pipeline.report import read_drops
from tests.data_pipeline.corpus import good_doc, prose, words, write_jsonl
from tests.data_pipeline.test_filters import C4_CASES, FINEWEB_CASES, GOPHER_QUALITY_CASES, GOPHER_REPETITION_CASES
from data_pipeline.filters import C4Filter, FineWebFilter, GopherQualityFilter, GopherRepetitionFilter

from launch import cli, prepare_data

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

ROOT = Path(__file__).resolve().parents[2]

SMALL = ["tokenize.vocab_size=400", "tokenize.workers=0", "progress=false"]


@pytest.mark.parametrize("flt,cases", [(GopherQualityFilter(), GOPHER_QUALITY_CASES),
                                       (GopherRepetitionFilter(), GOPHER_REPETITION_CASES),
                                       (C4Filter(bad_words=["frobnicate"]), C4_CASES),
                                       (FineWebFilter(), FINEWEB_CASES)])
def test_every_filter_drop_carries_a_value_that_crosses_its_threshold(flt, cases):
    for rule, text in cases.items():
        _, drop = flt.evaluate(text)
        assert drop.reason == flt.apply(text)[1] == f"{flt.name}.{rule}"
        assert drop.holds(), drop  # e.g. gopher_quality.too_few_words: 12 < 50
        assert isinstance(drop.value, (int, float)) and not isinstance(drop.value, bool)
    assert GopherQualityFilter().evaluate(GOPHER_QUALITY_CASES["stop_words"])[1].threshold == 2


def chain(n_docs=5, shift=25, length=500):
    """Windows of one word stream, each ``shift`` words on from the last: neighbours have Jaccard
    (of word 5-grams) 471/521 = 0.904, the first and the k-th (length - k*shift - 4) / (length + k*shift - 4):
    0.817, 0.737, 0.667. Ids are ordered by id_rank so the first window is the cluster's kept one."""
    stream = words(length + shift * (n_docs - 1), seed=77)
    texts = [prose(stream[k * shift:k * shift + length], per_line=shift) for k in range(n_docs)]
    ids = sorted((f"c{i}" for i in range(40)), key=id_rank)[:n_docs]
    return list(zip(ids, texts))


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chain")
    docs = chain() + [(f"g{i}", good_doc(300 + i)) for i in range(12)]
    src = write_jsonl(tmp / "in.jsonl", docs)
    out = {}
    for verify in ("false", "true"):
        out[verify] = tmp / f"out_{verify}"
        assert prepare_data.main(["--input", str(src), "--output", str(out[verify]), *SMALL,
                                  f"dedup.minhash.verify={verify}"]) == 0
    return [d for d, _ in chain()], src, out


def _near(folder):
    return {r["id"]: r for r in read_drops(folder, "minhash_dedup")}


def test_unverified_chain_drops_all_for_the_root_and_shows_the_weak_link(chained):
    (a, b, c, d, e), src, out = chained
    near = _near(out["false"])
    assert set(near) == {b, c, d, e} and {r["duplicate_of"] for r in near.values()} == {a}
    row = near[e]
    assert row["source"] == str(src) and row["index"] == 4 and row["snippet"].split()[0] == chain()[4][1].split()[0]
    # 112-hash estimate of the true 0.667 (sd ~0.045): below the 14 x 8 midpoint (1/14)^(1/8) = 0.719.
    assert row["threshold"] == 0.719 and row["value"] == row["jaccard"] and 0.55 < row["jaccard"] < 0.70
    assert "exact_jaccard" not in row
    assert near[b]["jaccard"] > 0.8


def test_verify_keeps_the_chain_members_not_near_a_kept_document(chained):
    (a, b, c, d, e), _, out = chained
    near = _near(out["true"])
    assert set(near) == {b, c, e}  # d (0.737 to a) is kept back
    assert near[b]["duplicate_of"] == near[c]["duplicate_of"] == a
    assert near[e]["duplicate_of"] == d  # the nearest kept document (0.904), not the cluster's root a
    assert [near[x]["exact_jaccard"] for x in (b, c, e)] == [0.904, 0.8168, 0.904]  # 471/521, 446/546
    assert all(r["value"] >= r["threshold"] == 0.75 for r in near.values())
    report = json.loads((out["true"] / "report.json").read_text())
    assert report["stages"]["minhash_dedup"]["dropped"] == {"minhash_dedup.near_duplicate": 3}


def test_inspect_prints_drops_with_their_evidence(chained, capsys):
    (a, b, c, d, e), _, out = chained
    assert prepare_data.main(["inspect", str(out["false"]), "--rule", "minhash_dedup", "--not-met"]) == 0
    text = capsys.readouterr().out
    weak = sum(r["jaccard"] < r["threshold"] for r in _near(out["false"]).values())  # e, maybe d (0.737)
    assert weak >= 1 and text.startswith(f"{weak} dropped by minhash_dedup (threshold not met)")
    assert f"minhash_dedup.near_duplicate  {e}" in text and "(NOT MET)" in text and f"duplicate_of={a}" in text
    assert f"kept {a}: | " in text  # the kept document's text beside the dropped one's
    assert prepare_data.main(["inspect", str(out["true"]), "--json", "--rule", "minhash_dedup"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["id"] for r in rows) == sorted([b, c, e])
    assert cli.call(prepare_data.main, ["inspect", str(out["true"] / "nope")]) == 2
    # A rule naming no reason or stage of the folder is a typo (one line, exit 2), not "0 dropped".
    capsys.readouterr()
    assert cli.call(prepare_data.main, ["inspect", str(out["true"]), "--rule", "minhash_dedupe"]) == 2
    err = capsys.readouterr().err
    assert "--rule minhash_dedupe: no drop of" in err and "minhash_dedup.near_duplicate" in err
    assert prepare_data.main(["inspect", str(out["true"]), "--rule", "tokenize"]) == 0  # a stage with no drops


def test_web_config_holds_the_papers_thresholds(tmp_path):
    where = ["inputs=[data/raw/python_docs.jsonl]", f"output={tmp_path}"]
    cfg = load_data_config(ROOT / "configs/data/web.yaml", where)
    paper = FiltersConfig()
    for name in ("gopher_quality", "gopher_repetition", "c4", "fineweb"):
        got, want = dataclasses.asdict(getattr(cfg.filters, name)), dataclasses.asdict(getattr(paper, name))
        diff = {k for k in got if got[k] != want[k]}
        assert diff == ({"line_end_punct"} if name == "c4" else set()), (name, diff)  # FineWeb's C4 variant
    assert (cfg.dedup.minhash.ngram, cfg.dedup.minhash.bands, cfg.dedup.minhash.rows) == (5, 14, 8)
    with pytest.raises(DataConfigError, match="dedup.minhash.jaccard_threshold=1.5 must be in"):
        load_data_config(ROOT / "configs/data/web.yaml", where + ["dedup.minhash.jaccard_threshold=1.5"])
