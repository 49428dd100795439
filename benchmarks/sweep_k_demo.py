"""`decflow sweep-k` on the digits demo: which k it recommends (the truth is 10) and how long it
takes. Labels are reported, never used to recommend.

Writes benchmarks/results/sweep_k_demo.{json,md} (with --pretrain-epochs N:
sweep_k_demo_e<N>.{json,md}); the demo source, its home and the chart go to a temporary folder.

    python benchmarks/sweep_k_demo.py                       # the config's pretraining (as nightly)
    python benchmarks/sweep_k_demo.py --pretrain-epochs 100 # faster, a different embedding

Measured on a 2-core machine: the default (500 epochs) takes 200 s, 171 s of it pretraining,
and recommends k=10; 100 epochs take 58 s and recommend k=11 (a less separated embedding).
"""

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN_DATE = dt.date(2026, 1, 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", default="4..16")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pretrain-epochs", type=int, default=None)
    ap.add_argument("--out", default=None, help="results stem (default results/sweep_k_demo)")
    args = ap.parse_args()
    stem = Path(args.out) if args.out else HERE / "results" / (
        "sweep_k_demo" + (f"_e{args.pretrain_epochs}" if args.pretrain_epochs else ""))

    from decflow.data.demo import demo_config, write_demo_source
    from decflow.insight.sweep_report import sweep_k_command

    home = Path(tempfile.mkdtemp(prefix="decflow-sweep-k-"))
    try:
        config = demo_config(str(home))
        write_demo_source(config.source.uri, RUN_DATE)
        t0 = time.perf_counter()
        result = sweep_k_command(config, args.k, RUN_DATE, args.seeds, home / "out",
                                 args.pretrain_epochs)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(home, ignore_errors=True)

    out = {"date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": f"python benchmarks/sweep_k_demo.py --k {args.k} --seeds {args.seeds}"
                      + (f" --pretrain-epochs {args.pretrain_epochs}"
                         if args.pretrain_epochs else ""),
           "machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "cores_usable": len(os.sched_getaffinity(0)),
                       "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
           "wall_seconds": round(wall, 1), "expected_k": 10, "result": result.to_dict()}
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    t = result.timings
    md = (f"# `decflow sweep-k` on the digits demo ({out['date_utc']})\n\n"
          f"- `{out['command']}`; {out['machine']['cores_usable']} usable cores, 1-min load "
          f"average {out['machine']['load_avg_1m_at_end']} at the end (a shared machine)\n"
          f"- wall time {wall:.0f} s: load {t['load']:.0f} s, pretraining "
          f"{t['pretrain']:.0f} s ({result.context['pretrain_epochs']} epochs), UMAP views "
          f"{t['views']:.0f} s, initialisations for every k and seed {t['sweep']:.0f} s\n\n"
          + result.to_markdown().replace("## k sweep", "## Result", 1))
    stem.with_suffix(".md").write_text(md)
    print(f"sweep-k on the demo: {wall:.1f} s; recommended k={result.recommended}")


if __name__ == "__main__":
    main()
