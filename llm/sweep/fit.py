"""Fit the sweep's law to its finished points and write what came of it: DIR/law.json (llm/scaling/law_fit.py),
DIR/report.md and DIR/isoflop.png; without a law (no budget with its minimum inside its sizes), the report and the
picture say why."""
from __future__ import annotations

from pathlib import Path

from llm.scaling.law import write_law
from llm.scaling.law_fit import LawFitError, fit_law
from llm.sweep import RunFailed
from llm.sweep.rundir import finished
from typed_yaml import log


def fit_and_write(out: Path, doc: dict, resamples: int, seed: int) -> dict:
    """Fit the law to the finished runs of sweep record `doc` (bootstrap: `resamples` resamples drawn with `seed`),
    write law.json, report.md and isoflop.png into `out`, and return the law. RunFailed when nothing has finished,
    or no law can be fitted (the report and the picture are written all the same)."""
    from llm.sweep.plot import plot_isoflop  # matplotlib: only when there is something to draw
    from llm.sweep.report import write_report
    done = finished(out, doc)
    points = [done[p["name"]] for p in doc["points"] if p["name"] in done]
    if not points:
        raise RunFailed(f"no point of {out} has finished yet (no done.json): nothing to fit; run the sweep "
                        "without --fit-only")
    try:
        law = fit_law(points, resamples=resamples, seed=seed)
    except LawFitError as e:
        # The runs are still worth a look: the report and the left panel show them, and say why there is no law.
        # A law.json from an earlier fit no longer describes these runs, so plan.py must not find it.
        (out / "law.json").unlink(missing_ok=True)
        partial = {"budgets": [], "excluded_budgets": e.excluded, "points": points, "fit_error": str(e)}
        plot_isoflop(partial, out / "isoflop.png")
        write_report(out / "report.md", doc, partial)
        raise RunFailed(f"{e}; wrote {out / 'report.md'} and {out / 'isoflop.png'} without a law") from None
    law["sweep"] = {"dir": str(out.resolve()), "law_centred_on": doc["law"], "spread_dex": doc["spread_dex"],
                    "shapes": doc["args"].get("shapes", "standard"), "seeds": doc["args"].get("seeds", 1),
                    "notes": doc["notes"], "data": doc.get("data")}
    write_law(out / "law.json", law)
    plot_isoflop(law, out / "isoflop.png")
    write_report(out / "report.md", doc, law)
    a, b = law["n_opt"], law["d_opt"]
    ci = lambda iv: "" if not iv else f" [{iv[0]:.3f}, {iv[1]:.3f}]"  # noqa: E731
    log.info(f"sweep: N_opt ∝ C^{a['a']:.3f}{ci(a['a_interval'])}, D_opt ∝ C^{b['b']:.3f}{ci(b['b_interval'])}; "
             f"wrote {out / 'law.json'}, {out / 'report.md'}, {out / 'isoflop.png'}")
    return law
