"""fp32 vs bf16 training on this CPU: the same pretraining run (same seed, data, batches, diffusion noise) in
both precisions, printed as a loss table and drawn as two loss curves (numbers, not assertions).

bf16 autocast runs the linear layers in bfloat16 (the S4 FFTs stay float32); on CPUs with native bf16
(AVX512-BF16 / AMX) it is the default of `fedecg pretrain` and of the sites' local training. This benchmark is
the evidence that it keeps the loss curve.

    python bench/bench_precision.py [--preset small] [--steps 300] [--batch 8] [--records 2000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

if __name__ == "__main__":  # before torch loads (pretraining.train): libgomp reads OMP_WAIT_POLICY only then
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pretraining.train import PretrainSettings, pretrain  # noqa: E402


def run(preset: str, steps: int, batch: int, records: int, out: Path, threads: int) -> dict:
    results = {}
    for precision in ("fp32", "bf16"):
        target = out / precision / "base.pt"
        t0 = time.perf_counter()
        card = pretrain(PretrainSettings(out=str(target), preset=preset, steps=steps, batch_size=batch,
                                         corpus_records=records, precision=precision, warmup_steps=min(50, steps),
                                         eval_samples=0, log_every=max(steps // 15, 1), save_every=steps,
                                         threads=threads, progress=False))
        wall = time.perf_counter() - t0
        history = [json.loads(line) for line in (target.parent / "base.loss.jsonl").read_text().splitlines()]
        results[precision] = {"wall_s": wall, "s_per_step": card["training"]["wall_seconds"] / steps,
                              "history": history}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-precision"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = run(args.preset, args.steps, args.batch, args.records, args.out, args.threads)
    fp, bf = res["fp32"]["history"], res["bf16"]["history"]
    rows = ["step   loss fp32   loss bf16   rel. diff"]
    for a, b in zip(fp, bf):
        rel = (b["loss"] - a["loss"]) / a["loss"]
        rows.append(f"{a['step']:>4} {a['loss']:>11.4f} {b['loss']:>11.4f} {rel:>+10.1%}")
    rows.append(f"s/step: fp32 {res['fp32']['s_per_step']:.3f}, bf16 {res['bf16']['s_per_step']:.3f} "
                f"({res['fp32']['s_per_step'] / res['bf16']['s_per_step']:.2f}x)")
    print("\n".join(rows))
    import matplotlib  # only to draw the plot, with the Agg backend (no display)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, hist in (("fp32", fp), ("bf16", bf)):
        ax.plot([h["step"] for h in hist], [h["loss"] for h in hist], marker="o", ms=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"{args.preset}, batch {args.batch}: fp32 vs bf16 autocast")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "precision.png", dpi=100)
    summary = {"preset": args.preset, "steps": args.steps, "batch": args.batch, "results": res}
    (args.out / "precision.json").write_text(json.dumps(summary, indent=1))
    if args.json:
        print(json.dumps(summary))
    print(f"plot: {args.out / 'precision.png'}")


if __name__ == "__main__":
    main()
