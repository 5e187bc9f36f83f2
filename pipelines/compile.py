"""Compile the EcoTune pipeline to a KFP v2 package (``make pipeline``).

Usage::

    python -m pipelines.compile --out build/ecotune_loop.yaml [--max-rounds N]
        [--parallelism P] [--gpu-evaluator] [--study study.yaml]

``--study`` takes the chart's study config (validated as ``pipelines.submit`` does, by
:class:`components.chart_config.ChartConfig`) and compiles its Kubernetes settings in; exit
code 2 when it is invalid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kfp import compiler

from pipelines.ecotune_loop import PipelineOptions, build_pipeline


def compile_pipeline(out: str | Path, options: PipelineOptions | None = None) -> Path:
    """Write the compiled pipeline YAML to ``out`` and return its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(options), str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.compile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="build/ecotune_loop.yaml", help="output YAML path")
    p.add_argument("--max-rounds", type=int, default=3, help="rounds unrolled (default 3)")
    p.add_argument("--parallelism", type=int, default=4, help="evaluators at once (default 4)")
    p.add_argument("--gpu-evaluator", action="store_true",
                   help="GPU evaluator steps (vLLM in the pod) instead of an existing service")
    p.add_argument("--study", help="study config YAML: Kubernetes settings from it")
    a = p.parse_args(argv)
    overrides = {"max_rounds": a.max_rounds, "parallelism": a.parallelism}
    if a.gpu_evaluator:
        overrides["gpu_evaluator"] = True
    if a.study:
        from components.chart_config import ChartConfig, ChartConfigError

        try:
            study = ChartConfig.load(a.study)
        except ChartConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        opts = PipelineOptions.from_study(study.dump(), **overrides)
    else:
        opts = PipelineOptions(**overrides)
    print(compile_pipeline(a.out, opts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
