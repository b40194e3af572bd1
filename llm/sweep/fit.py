"""Fit the sweep's law to its finished points and write what came of it: DIR/law.json (llm/scaling/law_fit.py),
DIR/report.md and DIR/isoflop.png; without a law (no budget with its minimum inside its sizes), the report and the
picture say why. A sweep of several families (--family) fits each family's runs alone, into DIR/families/NAME/, and
compares them: DIR/compare.json, compare.md and compare.png (llm/sweep/compare.py)."""
from __future__ import annotations

from pathlib import Path

from llm.scaling.law import write_law
from llm.scaling.law_fit import LawFitError, fit_law
from llm.sweep import RunFailed
from llm.sweep.rundir import finished
from typed_yaml import ConfigError
from typed_yaml import log


def fit_point(done: dict) -> dict:
    """A finished run (its done.json) as the fit takes it: N is the N of C = 6ND, the active parameters
    (llm/sweep/families.py; all of them for a dense model, and for runs recorded before families existed)."""
    return {**done, "n_params": done.get("n_params_active", done["n_params"])}


def fit_and_write(out: Path, doc: dict, resamples: int, seed: int) -> dict:
    """Fit the law to the finished runs of sweep record `doc` (bootstrap: `resamples` resamples drawn with `seed`),
    write law.json, report.md and isoflop.png into `out`, and return the law. RunFailed when nothing has finished,
    or no law can be fitted (the report and the picture are written all the same).
    With families (doc's args.families): each family's files in DIR/families/NAME/, then the comparison; returns
    compare.json's document. RunFailed naming every family that could not be fitted, after writing the rest."""
    families = doc["args"].get("families")
    if not families:
        return _fit_one(out, doc, resamples, seed, out)
    failures, by_family = [], {}
    for f in families:
        sub = {**doc, "points": [p for p in doc["points"] if p.get("family") == f["name"]]}
        dest = out / "families" / f["name"]
        dest.mkdir(parents=True, exist_ok=True)
        try:
            _fit_one(out, sub, resamples, seed, dest)
        except RunFailed as e:
            failures.append(f"family {f['name']}: {e}")
        done = finished(out, sub)
        by_family[f["name"]] = [fit_point(done[p["name"]]) for p in sub["points"] if p["name"] in done]
    from llm.sweep.compare import compare_families, reference_family, write_compare
    result = None
    try:
        result = compare_families({k: v for k, v in by_family.items() if v}, reference_family(families),
                                  resamples=resamples, seed=seed)
    except ConfigError as e:  # after a family without a law, its reason is already said once
        failures.append("so no comparison of the families" if failures else f"no comparison: {e}")
    if result is not None:
        from llm.sweep.plot import plot_compare  # matplotlib: only when there is something to draw
        write_compare(out, result)
        plot_compare(result, out / "compare.png")
        for cmp in result["comparisons"]:
            mid = cmp["at"][len(cmp["at"]) // 2]
            iv = mid["interval"]
            log.info(f"sweep: {cmp['family']} reaches loss {mid['loss']:.4f} with 1/{mid['multiplier']:.2f} of "
                     f"{cmp['reference']}'s compute" + (f" (5-95% [{iv[0]:.2f}, {iv[1]:.2f}])" if iv else "")
                     + ("; extrapolated" if cmp["extrapolated"] else "") + f"; wrote {out / 'compare.md'}, "
                     f"{out / 'compare.png'}")
    if failures:
        raise RunFailed("; ".join(failures))
    return result


def _fit_one(out: Path, doc: dict, resamples: int, seed: int, dest: Path) -> dict:
    """fit_and_write for the runs of `doc` (one family's, or a sweep's without families), its files into `dest`."""
    from llm.sweep.plot import plot_isoflop  # matplotlib: only when there is something to draw
    from llm.sweep.report import write_report
    done = finished(out, doc)
    points = [fit_point(done[p["name"]]) for p in doc["points"] if p["name"] in done]
    if not points:
        raise RunFailed(f"no point of {out} has finished yet (no done.json): nothing to fit; run the sweep "
                        "without --fit-only")
    try:
        law = fit_law(points, resamples=resamples, seed=seed)
    except LawFitError as e:
        # The runs are still worth a look: the report and the left panel show them, and say why there is no law.
        # A law.json from an earlier fit no longer describes these runs, so plan.py must not find it.
        (dest / "law.json").unlink(missing_ok=True)
        partial = {"budgets": [], "excluded_budgets": e.excluded, "points": points, "fit_error": str(e)}
        plot_isoflop(partial, dest / "isoflop.png")
        write_report(dest / "report.md", doc, partial)
        raise RunFailed(f"{e}; wrote {dest / 'report.md'} and {dest / 'isoflop.png'} without a law") from None
    law["sweep"] = {"dir": str(out.resolve()), "law_centred_on": doc["law"], "spread_dex": doc["spread_dex"],
                    "shapes": doc["args"].get("shapes", "standard"), "seeds": doc["args"].get("seeds", 1),
                    "notes": doc["notes"], "data": doc.get("data")}
    if any(p.get("shape", {}).get("moe") for p in doc["points"]):
        law["counting"]["N"] = "active parameters: the N of C = 6ND, from the model's FLOPs per token (families.py)"
    write_law(dest / "law.json", law)
    plot_isoflop(law, dest / "isoflop.png")
    write_report(dest / "report.md", doc, law)
    a, b = law["n_opt"], law["d_opt"]
    ci = lambda iv: "" if not iv else f" [{iv[0]:.3f}, {iv[1]:.3f}]"  # noqa: E731
    log.info(f"sweep: N_opt ∝ C^{a['a']:.3f}{ci(a['a_interval'])}, D_opt ∝ C^{b['b']:.3f}{ci(b['b_interval'])}; "
             f"wrote {dest / 'law.json'}, {dest / 'report.md'}, {dest / 'isoflop.png'}")
    return law
