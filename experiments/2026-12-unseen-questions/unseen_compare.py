"""Put two `ao eval --suite unseen` runs side by side (one Markdown table: untrained, each oracle, probes, text
baseline), e.g. the shipped reading oracle against its verification continuation on the same items.

    python experiments/2026-12-unseen-questions/unseen_compare.py \
        experiments/2026-12-unseen-questions/reading-oracle/unseen.json checkpoints/oracle-smollm2-135m-verify/eval/unseen.json --names reading,verify
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

FORMS = ("yes_no", "choice", "open")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs=2, help="two unseen.json files of the same items (same --suite-n and seed)")
    ap.add_argument("--names", default="first,second", help="column names of the two oracles")
    args = ap.parse_args()
    a, b = (json.loads(Path(p).read_text()) for p in args.runs)
    if a["config"] != b["config"] or list(a["sets"]) != list(b["sets"]):
        raise SystemExit("the two runs asked different items (config differs): rerun with the same arguments")
    na, nb = args.names.split(",")
    print(f"| set | form | untrained | {na} | {nb} | probe 8 | probe 64 | probe all | text baseline |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in b["sets"].items():
        p = r["probe"]
        for f in FORMS:
            print(f"| {name} | {f.replace('_', '/')} | {r['untrained'][f]:.2f} | {a['sets'][name]['trained'][f]:.2f} | "
                  f"**{r['trained'][f]:.2f}** | {p['8']:.2f} | {p['64']:.2f} | {p['all']:.2f} | {r['text'][f]:.2f} |")
    for label, run in ((na, a), (nb, b)):
        print(f"\n{label}: {json.dumps(run['summary'])}; mean yes/no sensitivity "
              f"{sum(s['trained']['sensitivity'] for s in run['sets'].values()) / len(run['sets']):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
