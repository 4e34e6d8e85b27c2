"""Oracle speed, in one run on the embedded model:
1. training examples/s with target activations read from the HDF5 store vs captured on the fly;
2. answers/s of ``ask_batch`` on 64 questions vs 64 single ``ask`` calls.

    python scripts/bench_oracle.py [--steps 6] [--batch-size 8] [--questions 64]
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--oracle", default="checkpoints/oracle-smollm2-135m")
    args = ap.parse_args()
    torch.manual_seed(0)

    from peft import LoraConfig, get_peft_model

    from hooks.models import load_model
    from oracle.core.api import Oracle, Query
    from oracle.training.loop import TrainConfig, build_examples, capture_example_store, make_batch, oracle_loss

    lm = load_model("smollm2-135m")
    base_model = lm.model
    work = Path(tempfile.mkdtemp(prefix="bench-oracle-"))
    cfg = TrainConfig(out=str(work / "o"), n_examples=args.steps * args.batch_size, batch_size=args.batch_size,
                      onpolicy=0, store_dir=str(work / "store"))
    examples = build_examples(cfg, lm)
    t0 = time.perf_counter()
    store = capture_example_store(lm, examples, cfg.store_path)
    capture_s = time.perf_counter() - t0

    lm.model = get_peft_model(copy.deepcopy(base_model), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
                              adapter_name="oracle")
    params = [p for p in lm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def run(source) -> float:
        batches = [list(range(i * args.batch_size, (i + 1) * args.batch_size)) for i in range(args.steps)]
        step(batches[0], source)  # warm-up
        t = time.perf_counter()
        for idx in batches:
            step(idx, source)
        return args.steps * args.batch_size / (time.perf_counter() - t)

    def step(idx, source):
        batch = make_batch(lm, cfg, examples, idx, source)
        loss = oracle_loss(lm, batch, cfg, False)
        opt.zero_grad()
        loss.backward()
        opt.step()

    fly = run(None)
    from_store = run(store)
    print(f"training, batch {args.batch_size}, {args.steps} steps (fp32, CPU):")
    print(f"  on-the-fly capture : {fly:7.2f} examples/s")
    print(f"  from HDF5 store    : {from_store:7.2f} examples/s  ({from_store / fly:.2f}x; target >= 1.3x)"
          f"  [one-off store capture: {capture_s:.1f}s for {len(examples)} examples]")

    lm.model = base_model
    lm.adapters.clear()
    oracle = Oracle.load(args.oracle, lm=lm) if Path(args.oracle).exists() else Oracle.untrained(lm=lm)
    qs = [Query(torch.randn(1 + i % 4, lm.d_model), "What is the model thinking about?") for i in range(args.questions)]
    t = time.perf_counter()
    oracle.ask_batch(qs, max_new_tokens=16, batch_size=64)
    batched = args.questions / (time.perf_counter() - t)
    t = time.perf_counter()
    for q in qs:
        oracle.ask(q.source, q.question, max_new_tokens=16)
    single = args.questions / (time.perf_counter() - t)
    print(f"answers ({args.questions} questions, up to 16 new tokens):")
    print(f"  {args.questions} single ask calls : {single:7.2f} answers/s")
    print(f"  one ask_batch          : {batched:7.2f} answers/s  ({batched / single:.2f}x; target >= 5x)")


if __name__ == "__main__":
    main()
