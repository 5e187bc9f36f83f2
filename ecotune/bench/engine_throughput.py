"""Throughput of OpenAIEngine against the ``openai`` client, same server, same requests.

Sends N short completion requests with the same concurrency (a) directly through
``openai.AsyncOpenAI`` and (b) through :class:`ecotune.engines.OpenAIEngine`, alternating
the two for ``--rounds`` rounds after a warm-up, and reports requests/s, completion
tokens/s and the ratio ecotune/direct (target >= 0.90).

Usage:
    python -m ecotune.serve_local --port 8000 &     # or any OpenAI-compatible server
    python -m ecotune.bench.engine_throughput --base-url http://127.0.0.1:8000 --n 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from ecotune.decoding import SamplingParams
from ecotune.engines import OpenAIEngine
from ecotune.serve_local import SERVED_MODEL_NAME


def make_prompts(n: int) -> list[str]:
    """N distinct short arithmetic prompts sharing a few-shot prefix (like a trial)."""
    prefix = "Q: 2+3=\nA: 5\nQ: 7+1=\nA: 8\n"
    return [f"{prefix}Q: {i % 31}+{(7 * i) % 29}=\nA:" for i in range(n)]


async def run_direct(base_url: str, model: str, prompts: list[str], params: SamplingParams,
                     concurrency: int, send_seed: bool) -> tuple[float, int]:  # fmt: skip
    """Seconds and completion tokens for all prompts via AsyncOpenAI."""
    from openai import AsyncOpenAI

    req = params.to_request(send_seed=send_seed)
    std = {k: req.pop(k) for k in ("temperature", "top_p", "max_tokens", "presence_penalty",
                                   "frequency_penalty", "n", "seed", "stop") if k in req}  # fmt: skip
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="EMPTY", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(p: str) -> int:
        async with sem:
            r = await client.completions.create(model=model, prompt=p, extra_body=req, **std)
        assert r.usage is not None
        return r.usage.completion_tokens

    t = time.perf_counter()
    toks = await asyncio.gather(*(one(p) for p in prompts))
    dt = time.perf_counter() - t
    await client.close()
    return dt, sum(toks)


async def run_ecotune(eng: OpenAIEngine, prompts: list[str], params: SamplingParams
                      ) -> tuple[float, int]:  # fmt: skip
    """Seconds and completion tokens for all prompts via OpenAIEngine."""
    t = time.perf_counter()
    out = await eng.agenerate(prompts, params)
    return time.perf_counter() - t, sum(c.completion_tokens for c in out)


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    prompts = make_prompts(args.n)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    eng = OpenAIEngine(args.base_url, args.model, max_concurrency=args.concurrency,
                       send_seed=args.send_seed)  # fmt: skip
    await run_direct(args.base_url, args.model, prompts[:8], params, args.concurrency,
                     args.send_seed)  # warm-up  # fmt: skip
    await run_ecotune(eng, prompts[:8], params)
    direct: list[float] = []
    ours: list[float] = []
    tokens = 0
    for r in range(args.rounds):
        order = ["direct", "ecotune"] if r % 2 == 0 else ["ecotune", "direct"]
        for which in order:
            if which == "direct":
                dt, tokens = await run_direct(args.base_url, args.model, prompts, params,
                                              args.concurrency, args.send_seed)  # fmt: skip
                direct.append(dt)
            else:
                dt, tokens = await run_ecotune(eng, prompts, params)
                ours.append(dt)
            print(f"round {r} {which:8s} {dt:7.2f} s  {len(prompts) / dt:6.2f} req/s", flush=True)
    await eng.aclose()
    d, o = statistics.median(direct), statistics.median(ours)
    return {
        "n": args.n, "max_tokens": args.max_tokens, "concurrency": args.concurrency,
        "rounds": args.rounds, "completion_tokens_per_run": tokens,
        "direct_s": round(d, 3), "ecotune_s": round(o, 3),
        "direct_req_per_s": round(args.n / d, 2), "ecotune_req_per_s": round(args.n / o, 2),
        "direct_out_tok_per_s": round(tokens / d, 1), "ecotune_out_tok_per_s": round(tokens / o, 1),
        "ratio_ecotune_over_direct": round(d / o, 3),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default=SERVED_MODEL_NAME)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--send-seed", action="store_true", help="not for vLLM's CPU build")
    args = ap.parse_args(argv)
    res = asyncio.run(main_async(args))
    print(json.dumps(res, indent=2))
    ok = res["ratio_ecotune_over_direct"] >= 0.9
    print("PASS" if ok else "BELOW TARGET", "(target: ecotune >= 0.90 x direct)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
