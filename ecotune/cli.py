"""The ``ecotune`` command.

Usage::

    ecotune tune --config study.yaml [--optimizer X] [--budget N] [--seed N] [--name S] [--plain]
    ecotune resume --config study.yaml        # or: ecotune resume --journal runs/demo/journal.jsonl
    ecotune promote --config study.yaml       # only the promotion step, from the journal
    ecotune score --task T --samples FILE     # score a JSONL of completions
    ecotune serve-local [--port 8000]         # serve the embedded model until Ctrl-C
    ecotune bench ...                         # benchmark optimizers (ecotune.bench.cli)

Exit codes: 0 ok, 1 runtime error (engine down, storage), 2 bad config or usage,
130 interrupted (Ctrl-C; the journal is intact, continue with ``ecotune resume``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
import warnings
from typing import Any

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() can print one line and return 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


def _parser() -> _Parser:
    ap = _Parser(prog="ecotune", description="Token-efficient tuning of LLM inference settings.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("tune", help="run a new study from a YAML config")
    t.add_argument("--config", required=True, help="study YAML file")
    t.add_argument("--optimizer", help="override the config's optimizer")
    t.add_argument("--budget", type=int, help="override budget_tokens")
    t.add_argument("--seed", type=int, help="override seed")
    t.add_argument("--name", help="override the study name (a new journal under workdir)")
    t.add_argument("--plain", action="store_true", help="plain progress lines, no live display")

    r = sub.add_parser("resume", help="continue an interrupted study from its journal")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", help="the study YAML it was started with")
    g.add_argument("--journal", help="the study journal (local path or s3:// URI)")
    r.add_argument("--plain", action="store_true", help="plain progress lines, no live display")

    p = sub.add_parser("promote", help="promote the journal's best config in the MLflow registry")
    p.add_argument("--config", required=True, help="study YAML file")

    s = sub.add_parser("score", help="score a JSONL file of completions",
                       add_help=False)
    s.add_argument("args", nargs=argparse.REMAINDER)
    sl = sub.add_parser("serve-local", help="serve the embedded model (vLLM, CPU)",
                        add_help=False)
    sl.add_argument("args", nargs=argparse.REMAINDER)
    b = sub.add_parser("bench", help="benchmark optimizers (see `ecotune bench --help`)",
                       add_help=False)
    b.add_argument("args", nargs=argparse.REMAINDER)
    return ap


def _quiet_mlflow_warnings() -> None:
    """Drop MLflow's advice-only warnings (it forces them on with ``simplefilter("once")``,
    so a filter cannot), keeping every other warning."""
    shown = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, *a: Any, **k: Any) -> None:
        if "mlflow" in str(filename) and issubclass(category, UserWarning):
            return
        shown(message, category, filename, lineno, *a, **k)

    warnings.showwarning = show


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def _delegate(module: str, func: str, argv: list[str], what: str) -> int:
    if importlib.util.find_spec(module) is None:
        _err(f"`ecotune {what}` is not available: module {module} is not installed")
        return EXIT_RUNTIME
    fn = getattr(importlib.import_module(module), func, None)
    if fn is None:
        _err(f"`ecotune {what}` is not available: {module}.{func} is missing")
        return EXIT_RUNTIME
    try:
        rc = fn(argv)
    except SystemExit as e:  # argparse inside the delegate
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
    return int(rc or 0)


def _run(args: argparse.Namespace, raw: list[str]) -> int:
    from ecotune import study

    cmd = args.command
    live = False if getattr(args, "plain", False) else None
    if cmd == "tune":
        cfg = study.load_study_config(args.config, optimizer=args.optimizer,
                                      budget_tokens=args.budget, seed=args.seed,
                                      name=args.name)
        study.run_tune(cfg, resume=False, live=live)
        return EXIT_OK
    if cmd == "resume":
        if args.config:
            cfg = study.load_study_config(args.config)
        else:
            cfg = study.config_from_journal(args.journal)
        study.run_tune(cfg, resume=True, live=live)
        return EXIT_OK
    if cmd == "promote":
        cfg = study.load_study_config(args.config)
        study.run_promote(cfg)
        return EXIT_OK
    raise _UsageError(f"unknown command {cmd!r}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ecotune`` console script; returns the exit code."""
    raw = list(sys.argv[1:] if argv is None else argv)
    # delegated subcommands get their arguments untouched
    if raw and raw[0] == "score":
        return _delegate("ecotune.tasks.score_file", "main_score", raw[1:], "score")
    if raw and raw[0] == "serve-local":
        return _delegate("ecotune.serve_local", "main", raw[1:], "serve-local")
    if raw and raw[0] == "bench":
        return _delegate("ecotune.bench.cli", "main", raw[1:], "bench")
    ap = _parser()
    try:
        args = ap.parse_args(raw)
    except _UsageError as e:
        _err(str(e))
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else EXIT_OK
    if args.command is None:
        ap.print_help(sys.stderr)
        return EXIT_USAGE
    if not args.verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        warnings.filterwarnings("ignore", module=r"mlflow(\..*)?$")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        _quiet_mlflow_warnings()
    # tracking must never stall a study: bound MLflow's HTTP retries and timeouts (what could
    # not be written is synced later from the journal)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "alembic", "mlflow", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING if args.verbose else logging.ERROR)

    from ecotune.config import StudyConfigError, StudyError
    from ecotune.engines import EngineError
    from ecotune.journal import JournalError

    try:
        return _run(args, raw)
    except KeyboardInterrupt:
        print("\ninterrupted: the journal is intact; continue with `ecotune resume "
              + (f"--config {args.config}`" if getattr(args, "config", None)
                 else "--journal PATH`"), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (StudyConfigError, _UsageError) as e:
        _err(str(e))
        return EXIT_USAGE
    except (StudyError, EngineError, JournalError) as e:
        _err(str(e))
        return EXIT_RUNTIME
    except OSError as e:
        _err(f"{type(e).__name__}: {e}")
        return EXIT_RUNTIME


if __name__ == "__main__":
    raise SystemExit(main())
