"""llm/sweep/fit.py, report.py and plot.py in-process: a designed grid whose done.json files hold the losses of a
known law (so its exponent must come back), or losses with no minimum inside (no law: the report and picture say
why), fitted into law.json, report.md and isoflop.png."""
from __future__ import annotations

import json

import numpy as np
import pytest

from llm.scaling.laws import ParametricLaw, get_law
from llm.scaling.grid import design_grid
from llm.sweep import RunFailed
from llm.sweep.fit import fit_and_write
from llm.sweep.points import grid_json, seeded_runs
from llm.sweep.rundir import marker

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

KNOWN = ParametricLaw("known", E=1.5, A=500.0, B=100.0, alpha=0.35, beta=0.35)  # a = 0.5; N_opt(3e10) ≈ 0.7M


@pytest.fixture(scope="module")
def doc() -> dict:
    """tests/launch/test_sweep.py's grid: two budgets, three sizes each, vocabulary 512, 32-token sequences."""
    grid = design_grid([3e10, 6e10], 3, get_law("besiroglu"), 512, 32, spread_dex=0.25)
    record = {"budgets": grid.budgets, "sizes_per_budget": 3, "spread": 0.25, "law": "besiroglu",
              "config": "base.yaml", "shapes": "standard", "eval_tokens": 8192, "seeds": 1}
    return grid_json(grid, record, seeded_runs(grid, 1, 0))


def _finish(out, doc, loss_of) -> None:
    for p in doc["points"]:
        marker(out, p["name"]).parent.mkdir(parents=True, exist_ok=True)
        done = {k: p[k] for k in ("name", "seed", "flops", "n_params", "n_params_active", "n_tokens", "tokens_trained",
                                  "total_steps") if k in p}
        marker(out, p["name"]).write_text(json.dumps({**done, "loss": loss_of(p), "wall_s": 2.0}))


def test_the_law_of_the_runs_is_fitted_drawn_and_reported(doc, tmp_path, capsys):
    rng = np.random.default_rng(0)
    _finish(tmp_path, doc, lambda p: KNOWN.loss(p["n_params"], p["n_tokens"]) * (1 + 1e-3 * rng.standard_normal()))
    law = fit_and_write(tmp_path, doc, resamples=100, seed=0)
    said = capsys.readouterr().out.splitlines()
    assert law == json.loads((tmp_path / "law.json").read_text())
    assert law["n_opt"]["a"] == pytest.approx(KNOWN.a, abs=0.05) and law["sweep"]["shapes"] == "standard"
    assert law["sweep"]["dir"] == str(tmp_path.resolve()) and law["sweep"]["law_centred_on"] == doc["law"]
    assert len(said) == 1 and said[0].startswith(f"sweep: N_opt ∝ C^{law['n_opt']['a']:.3f}")
    report = (tmp_path / "report.md").read_text()
    assert f"a = {law['n_opt']['a']:.3f}" in report and "## Power laws" in report and "Muennighoff" in report
    assert "| 2 |" in report  # the runs' wall time
    import matplotlib.image
    png = matplotlib.image.imread(tmp_path / "isoflop.png")
    assert png.shape[:2] == (650, 1700) and png[..., :3].std() > 0.05


def test_no_minimum_inside_writes_the_report_and_picture_without_a_law(doc, tmp_path):
    """Losses that rise with N at every budget (as the real runs' do at these budgets, test_sweep.py): no law, a
    one-line reason, and an earlier law.json removed."""
    (tmp_path / "law.json").write_text("{}")
    _finish(tmp_path, doc, lambda p: 3.0 + 0.3 * (np.log10(p["n_params"]) - 3.0) ** 2)  # its minimum at N = 1000
    with pytest.raises(RunFailed, match="without a law") as e:
        fit_and_write(tmp_path, doc, resamples=10, seed=0)
    assert "\n" not in str(e.value) and not (tmp_path / "law.json").exists()
    assert "## No law fitted" in (tmp_path / "report.md").read_text() and (tmp_path / "isoflop.png").is_file()


def test_nothing_finished_is_nothing_to_fit(doc, tmp_path):
    with pytest.raises(RunFailed, match="has finished yet"):
        fit_and_write(tmp_path, doc, resamples=10, seed=0)
    assert not (tmp_path / "report.md").exists()


def test_families_are_fitted_apart_and_compared(tmp_path, capsys):
    """--family: each family's law in DIR/families/NAME/, and the comparison: the MoE family's losses are the dense
    law's with twice the compute (N and D each √2 larger), so it must come out cheaper at equal loss."""
    from llm.sweep.families import parse_families
    from llm.sweep.points import family_runs
    law = get_law("besiroglu")
    grid = design_grid([3e10, 6e10], 3, law, 512, 32, spread_dex=0.25)
    families = parse_families([["dense"], ["moe4", "experts=4", "top_k=1"]])
    record = {"budgets": grid.budgets, "sizes_per_budget": 3, "spread": 0.25, "law": "besiroglu",
              "config": "base.yaml", "shapes": "standard", "eval_tokens": 8192, "seeds": 1,
              "families": [f.to_json() for f in families]}
    doc = grid_json(grid, record, family_runs(grid, families, 1, 0, law))
    s = np.sqrt(2.0)
    _finish(tmp_path, doc, lambda p: KNOWN.loss(p["n_params"] * (s if p["family"] == "moe4" else 1),
                                                p["n_tokens"] * (s if p["family"] == "moe4" else 1)))
    cmp = fit_and_write(tmp_path, doc, resamples=50, seed=0)
    for name in ("dense", "moe4"):
        fam_law = json.loads((tmp_path / "families" / name / "law.json").read_text())
        assert {p["name"] for p in fam_law["points"]} == {p["name"] for p in doc["points"] if p["family"] == name}
        assert (tmp_path / "families" / name / "report.md").read_text().count(f"Family `{name}` (") == 1
    assert not (tmp_path / "law.json").exists()
    assert cmp == json.loads((tmp_path / "compare.json").read_text()) and cmp["reference"] == "dense"
    assert all(row["multiplier"] > 1 for row in cmp["comparisons"][0]["at"])
    assert "| moe4 | dense |" in (tmp_path / "compare.md").read_text() and (tmp_path / "compare.png").is_file()
    assert "sweep: moe4 reaches loss" in capsys.readouterr().out
