"""``ecotune bench``: collect replay tables and run replay benchmarks.

Commands:
    ecotune bench collect --task arithmetic --engine-url URL --model M --n-configs 48 \\
        --instances 80 --out benchmarks/arithmetic.jsonl.gz [--seed 0]
    ecotune bench run --table benchmarks/arithmetic.jsonl.gz|synthetic --budget 50000 \\
        --seeds 10 --optimizers ecotune,random,qmc,botorch,cmaes,bohb,helm \\
        --out benchmarks/report_arithmetic/
    ecotune bench waste runs/demo-*/journal.jsonl    # tokens spent re-measuring
    ecotune bench suite --seeds 30 --out benchmarks/suite   # the peer benchmark (#11)
    ecotune bench warmstart --seeds 10 --out benchmarks/warmstart.json  # a second run's saving
"""

from __future__ import annotations

import argparse
import logging
import sys

from ecotune.optimizers import OPTIMIZERS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecotune bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="record a config x instance table with a real engine")
    c.add_argument("--task", required=True, help="arithmetic, gsm8k_calc, or a task name")
    c.add_argument("--engine-url", default=None,
                   help="an OpenAI-compatible server (default: the embedded model in vLLM's "
                        "offline engine, in this process)")
    c.add_argument("--model", default=None, help="served model name (default: the embedded)")
    c.add_argument("--n-configs", type=int, default=48, help="Sobol configs (plus HELM default)")
    c.add_argument("--instances", type=int, default=80, help="first N of the nested order")
    c.add_argument("--out", required=True, help="output .jsonl.gz (resumed if present)")
    c.add_argument("--seed", type=int, default=0, help="Sobol scramble and nested-order seed")
    c.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    c.add_argument("--repeats", type=int, default=3, help="samples per instance, sampled configs")
    c.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("run", help="replay optimizers on a table and write a report")
    r.add_argument("--table", required=True, help="a collected .jsonl.gz, or 'synthetic'")
    r.add_argument("--budget", type=int, default=50_000, help="token budget per study")
    r.add_argument("--seeds", type=int, default=10)
    r.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                   help="comma list of optimizers (plus the experiment 'ecotune+default')")
    r.add_argument("--out", required=True, help="report folder")
    r.add_argument("--r-min", type=int, default=None, help="default: max(2, N // 16)")
    r.add_argument("--r-max", type=int, default=None, help="default: all table instances")
    r.add_argument("--name", default=None, help="report title (default: the table's task)")
    r.add_argument("--restrict", action="store_true",
                   help="optimizers choose among the table's configs (candidates) instead of "
                        "having free proposals mapped to the nearest one")
    r.add_argument("--reach-factor", type=int, default=10,
                   help="also run BOHB with this many times the budget, to measure the tokens "
                        "it needs to reach the target where the budget cuts it off (1: off)")
    r.add_argument("--timing", action=argparse.BooleanOptionalAction, default=True,
                   help="measure ecotune's ask+tell time at 50 and 200 observations")
    u = sub.add_parser("suite", help="every problem x method x seed (resumable) and the report")
    u.add_argument("--out", default="benchmarks/suite", help="folder: runs.jsonl.gz, report.md")
    u.add_argument("--seeds", type=int, default=30)
    u.add_argument("--problems", default=None, help="comma list (default: the whole suite)")
    u.add_argument("--workers", type=int, default=1,
                   help="processes of one thread each (ecotune.bench.suite_workers)")
    u.add_argument("--optimizers", default=None, help="comma list (default: every method)")
    u.add_argument("--horizon", type=float, default=1.0,
                   help="run to this many times each budget, into runs-<h>x.jsonl.gz: BOHB's "
                        "tokens to a target the budget cuts off (the report's token ratio)")
    u.add_argument("--smoke", action="store_true", help="2 problems, cheap methods (CI)")
    u.add_argument("--report-only", action="store_true", help="rebuild the report, run nothing")
    u.add_argument("--verify", type=int, default=0, metavar="N",
                   help="run seeds 0..N-1 of every recorded problem x method again (mfkg only "
                        "if named) and name the rows that do not repeat; exit 1 if any; "
                        "records nothing (ecotune.bench.suite_verify)")
    u.add_argument("--docs", default=None,
                   help="also put the report's tables into this markdown file, between "
                        "its '<!-- suite:begin -->' and '<!-- suite:end -->' lines")
    sub.add_parser("waste", help="tokens a study spent re-measuring greedy answers",
                   add_help=False)
    sub.add_parser("warmstart", help="tokens a warm start saves on a study's second run",
                   add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "waste":
        from ecotune.bench.waste import main as waste_main

        return waste_main(argv[1:])
    if argv and argv[0] == "warmstart":
        from ecotune.bench.warmstart import main as warmstart_main

        return warmstart_main(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.cmd == "collect":
        return _collect(args)
    if args.cmd == "suite":
        return _suite(args)
    if args.cmd == "run":
        from ecotune.bench.report import run_benchmark

        names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
        from ecotune.bench.report import EXPERIMENTS

        bad = [n for n in names if n not in OPTIMIZERS and n not in EXPERIMENTS]
        if bad:
            print(f"unknown optimizers: {', '.join(bad)}", file=sys.stderr)
            return 2
        try:
            md = run_benchmark(args.table, out=args.out, budget=args.budget, seeds=args.seeds,
                               optimizers=names, r_min=args.r_min, r_max=args.r_max,
                               name=args.name, timing=args.timing, restrict=args.restrict,
                               reach_factor=args.reach_factor)
        except (ValueError, OSError) as e:
            print(f"ecotune bench run: {e}", file=sys.stderr)
            return 2
        print(f"report written to {md}")
        return 0
    return 2


def _suite(args: argparse.Namespace) -> int:
    """``bench suite``: run what is missing (or nothing), then write the report."""
    from pathlib import Path

    from ecotune.bench.suite import METHODS, run_suite, splice_docs, write_report
    from ecotune.bench.suite_workers import RunsFailed

    smoke_methods = ("ecotune", "random", "bohb", "smac_bohb")
    methods = ([m.strip() for m in args.optimizers.split(",") if m.strip()] if args.optimizers
               else list(smoke_methods if args.smoke else METHODS))
    from ecotune.bench.runs import EXPERIMENTS

    bad = [m for m in methods if (m not in OPTIMIZERS and m not in EXPERIMENTS) or m == "helm"]
    if bad or args.seeds < 1 or args.workers < 1 or not args.horizon >= 1 or args.verify < 0:
        print(f"ecotune bench suite: unknown optimizers {bad}" if bad else
              "ecotune bench suite: --seeds and --workers must be >= 1, --horizon too, "
              "--verify >= 0",
              file=sys.stderr)
        return 2
    if args.verify:
        return _verify(args, methods if args.optimizers else None)
    try:
        if args.report_only:
            md = write_report(Path(args.out))
        else:
            probs = args.problems.split(",") if args.problems else None
            md = run_suite(args.out, seeds=args.seeds, problems=probs, methods=methods,
                           smoke=args.smoke, workers=args.workers, horizon=args.horizon)
        if args.docs:
            splice_docs(md, Path(args.docs))
    except RunsFailed as e:  # the other runs are recorded and in the report; docs untouched
        print(f"ecotune bench suite: {e} (tracebacks above; the other runs are recorded, "
              f"report written to {Path(args.out) / 'report.md'})", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"ecotune bench suite: {e}", file=sys.stderr)
        return 2
    print(f"report written to {md}")
    return 0


def _verify(args: argparse.Namespace, methods: list[str] | None) -> int:
    """``bench suite --verify N``: the recorded rows run again; exit 1 if one differs."""
    from pathlib import Path

    from ecotune.bench.suite import HORIZON_RUNS, RUNS
    from ecotune.bench.suite_verify import RTOL, summary_lines, verify
    from ecotune.bench.suite_workers import RunsFailed

    h = args.horizon
    path = Path(args.out) / (RUNS if h == 1.0 else HORIZON_RUNS.format(h=h))
    probs = args.problems.split(",") if args.problems else None
    checks = []
    try:
        for c in verify(path, args.verify, probs, methods, args.workers):
            checks.append(c)
            said = ("repeats" if c.exact else f"repeats, scores to within {RTOL:g}"
                    if c.repeats else f"DIFFERS from trial {c.parts_at}")
            print(f"{c.problem} {c.method} seed {c.seed}: {said}", flush=True)
    except RunsFailed as e:
        print(f"ecotune bench suite --verify: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"ecotune bench suite --verify: {e}", file=sys.stderr)
        return 2
    if not checks:
        print(f"ecotune bench suite --verify: {path} holds no row of the current suite "
              "version for these problems and optimizers", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(checks)))
    return 0 if all(c.repeats for c in checks) else 1


def _collect(args: argparse.Namespace) -> int:
    """``bench collect``: against ``--engine-url``, or the embedded engine started here."""
    from ecotune.bench.collect import collect
    from ecotune.serve_local import SERVED_MODEL_NAME, prepare_model

    if args.repeats < 1 or args.n_configs < 1 or args.instances < 1:
        print("ecotune bench collect: --repeats, --n-configs and --instances must be >= 1",
              file=sys.stderr)
        return 2
    model = args.model or SERVED_MODEL_NAME
    engine = None
    if args.engine_url is None:
        from ecotune.bench.offline import OfflineEngine

        engine = OfflineEngine(prepare_model(), model)
    try:
        out = collect(args.task, args.engine_url or "offline", model, args.n_configs,
                      args.instances, args.out, seed=args.seed, concurrency=args.concurrency,
                      progress=not args.no_progress, repeats=args.repeats, engine=engine)
    except ValueError as e:
        print(f"ecotune bench collect: {e}", file=sys.stderr)
        return 2
    finally:
        if engine is not None:
            engine.close()
    print(f"table written to {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
