"""Bench: where a book build's time went, per chapter and per unit of work (no ratio: a split).

Reads what the last ``dfrobust book --profile P`` left behind: the runner's stamps next to the
executed chapters (wall seconds per chapter) and the timings each chapter stored in its results
(:func:`dfrobust.study.perf.unit_costs`), and prints the per-chapter split against the profile's
budget (``budget_min`` of 06_performance in ``notebooks/study.yml``). ``--build`` runs the study
first, so one command measures a build from whatever is cached (a fresh data home measures the
whole build, data and training included).

    python bench/bench_book.py --profile default            # after make book
    DFROBUST_DATA_HOME=/tmp/fresh python bench/bench_book.py --profile default --build
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd

from dfrobust.core.paths import results_dir
from dfrobust.study import perf, runner, spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default", help="study profile (quick, default, paper)")
    ap.add_argument("--build", action="store_true", help="run the study first (cached work is reused)")
    ap.add_argument("--json", default="", help="write the split to this JSON file")
    args = ap.parse_args()
    study = spec.load_study()
    wall = None
    if args.build:
        t0 = time.perf_counter()
        runner.run_study(args.profile, study=study)
        wall = time.perf_counter() - t0
    timings = perf.notebook_timings()
    timings = timings[timings.profile == args.profile]
    budget = float(next((nb.params.get(args.profile, {}).get("budget_min", 0.0) for nb in study.notebooks
                         if nb.name == "06_performance"), 0.0))
    total = float(timings.wall_s.sum())
    pd.set_option("display.width", 160)
    print(f"profile {args.profile}: per-chapter wall time (runner stamps)")
    print(timings.assign(share=(timings.wall_s / total).round(3)).to_string(index=False))
    print(f"chapters: {total:.1f} s = {total / 60:.1f} min" + (f" (budget {budget:g} min: "
          f"{'within' if total / 60 <= budget else 'OVER'})" if budget else "")
          + (f"; this --build call: {wall:.1f} s" if wall is not None else ""))
    units = perf.unit_costs(results_dir(args.profile))
    print("\ncost per unit of work (seconds the chapters stored in their results)")
    print(units.to_string(index=False) if len(units) else "(no results of this profile)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"profile": args.profile, "total_s": total, "budget_min": budget,
                       "chapters": timings.to_dict("records"), "units": units.to_dict("records")}, f, indent=1)


if __name__ == "__main__":
    main()
