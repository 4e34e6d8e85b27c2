"""Write ``hooks/data_registry.json`` (what ``ao data fetch`` and ``ao data check`` read) from a complete
``shared/data`` folder, and copy the files that have no upstream into ``hooks/shipped_data/``.

Every file gets its size, its sha256 (of the local copy) and where it comes from: a path in one of the pinned
source snapshots of ``shared/data/README.md`` ("Source snapshots", "Mapping from the AO repository's
``datasets/`` paths", the per-folder "Origin" lines), or ``package`` for the files shipped inside the package:
the folder's own README.md, LICENSES.md and licence texts (written for this folder; the licence texts' bytes at
the pinned commits could not be checked offline) and ``taboo/taboo_words.txt`` (the upstream ``taboo_words.txt``
of EmilRyd/eliciting-secrets, keeping only the words whose chats are distributed, order kept).

    python scripts/make_data_registry.py                    # from ../shared/data (or $AO_DATA_DIR)
    python scripts/make_data_registry.py --check            # exit 1 when the registry is out of date
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hooks.atomic import write_json_atomic  # noqa: E402
from hooks.data_registry import REGISTRY_PATH, SHIPPED_DIR, sha256_of as sha256  # noqa: E402
from hooks.paths import data_dir  # noqa: E402

SOURCES = {
    "ao": {"repo": "adamkarvonen/activation_oracles", "commit": "55f153f9102d4de0a33e0c5fe212792788c1dc36",
           "licence": "MIT"},
    "latentqa": {"repo": "aypan17/latentqa", "commit": "e40cc447ba89e0a935c83548e8f1f767b09015b5",
                 "licence": "Apache-2.0"},
    "eliciting-secrets": {"repo": "EmilRyd/eliciting-secrets", "commit": "5632f9d7c9993bdf46aec6de6bf7cc64a29d2eb9",
                          "licence": "Apache-2.0"},
    "eliciting-secret-knowledge": {"repo": "cywinski/eliciting-secret-knowledge",
                                   "commit": "45aae57930a7d6ef5503a9b9b23e0b23fd8068ca", "licence": "MIT"},
    "pytorch-examples": {"repo": "pytorch/examples", "commit": "77f55b912142e11fcfdf5b530231fb9c52f181e8",
                         "licence": "BSD-3-Clause (WikiText-2 data: CC BY-SA 3.0)"},
    "char-rnn": {"repo": "karpathy/char-rnn", "commit": "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e",
                 "licence": "MIT per README (Shakespeare text: public domain)"},
    "sst2": {"repo": "clairett/pytorch-sentiment-classification", "commit": "457ffd83de90a9d6d472d8ffc31bbffe40a8b236",
             "licence": "no licence file (SST: licence unknown)"},
}

# local prefix -> (source, upstream prefix); the first match wins, so the more specific prefixes come first
RULES = (
    ("classification/sst2/", "sst2", "data/SST2/"),
    ("classification/", "ao", "datasets/classification_datasets/"),
    ("latentqa/eval/", "latentqa", "data/eval/"),
    ("latentqa/train/", "latentqa", "data/train/"),
    ("latentqa/controls/", "latentqa", "controls/"),
    ("latentqa/prompts/", "latentqa", "prompts/"),
    ("personaqa/", "ao", "datasets/personaqa_data/"),
    ("factual/", "ao", "datasets/factual/"),
    ("audit/taboo/", "ao", "datasets/taboo/"),
    ("audit/gender/", "ao", "datasets/gender/"),
    ("audit/ssc/", "ao", "datasets/ssc/"),
    ("audit/eliciting_secret_knowledge/prompts/", "eliciting-secret-knowledge", "prompts/"),
    ("audit/eliciting_secret_knowledge/training_configs/", "eliciting-secret-knowledge", "training/configs/"),
    ("text/wikitext2_valid.txt", "pytorch-examples", "word_language_model/data/wikitext-2/valid.txt"),
    ("text/wikitext2_test.txt", "pytorch-examples", "word_language_model/data/wikitext-2/test.txt"),
    ("text/tinyshakespeare.txt", "char-rnn", "data/tinyshakespeare/input.txt"),
)
SHIPPED = ("README.md", "LICENSES.md", "licenses/", "taboo/taboo_words.txt")
TABOO_CHATS = "taboo/chats/"  # <word>.jsonl <- generated_datasets/<word>_guessing_game_dataset.jsonl

DOCS = ["README.md", "LICENSES.md", "licenses/"]
# What each group's commands open (traced with an audit hook on file opens); the docs travel with every group.
GROUPS = {
    "reading": {
        "help": "ao train with the default reading mix, ao eval --suite skills, ao calibrate",
        "prefixes": DOCS + ["text/wikitext2_valid.txt", "text/wikitext2_test.txt", "classification/gmt/",
                            "classification/sst2/", "classification/tense/", "classification/singular_plural/",
                            "classification/paraphrases/", "latentqa/"],
    },
    "unseen": {
        "help": "ao eval --suite unseen",
        "prefixes": DOCS + ["classification/engels/"],
    },
    "audit": {
        "help": "ao audit, ao demo, ao organism train",
        "prefixes": DOCS + ["audit/", "taboo/", "text/wikitext2_test.txt"],
    },
    "all": {"help": "every file: also the other task families, the held-out sets of ao eval, ao probe-bench", "prefixes": [""]},
}


def origin(rel: str) -> tuple[str, str | None]:
    """(source, upstream path) of one file of the folder; ``("package", None)`` for the shipped files."""
    if any(rel == s or (s.endswith("/") and rel.startswith(s)) for s in SHIPPED):
        return "package", None
    if rel.startswith(TABOO_CHATS) and rel.endswith(".jsonl"):
        word = rel[len(TABOO_CHATS):-len(".jsonl")]
        return "eliciting-secrets", f"generated_datasets/{word}_guessing_game_dataset.jsonl"
    for prefix, source, upstream in RULES:
        if rel == prefix:
            return source, upstream
        if prefix.endswith("/") and rel.startswith(prefix):
            return source, upstream + rel[len(prefix):]
    raise SystemExit(f"no upstream rule for {rel}: add one to RULES")


def build(root: Path) -> dict:
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        source, upstream = origin(rel)
        row = {"path": rel, "size": path.stat().st_size, "sha256": sha256(path), "source": source}
        if upstream is not None:
            row["upstream"] = upstream
        files.append(row)
    return {
        "version": 1,
        "about": "Every file of the shared data folder: its upstream file at a pinned commit (fetched from "
                 "{base_url}/{repo}/{commit}/{upstream}) or 'package' (shipped in hooks/shipped_data/), with the "
                 "sha256 of the copy in shared/data. Written by scripts/make_data_registry.py.",
        "base_url": "https://raw.githubusercontent.com",
        "sources": SOURCES,
        "groups": GROUPS,
        "files": files,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="a complete shared/data folder (default: the resolver's)")
    p.add_argument("--check", action="store_true", help="only compare: exit 1 when the registry or a shipped "
                                                         "file is out of date")
    args = p.parse_args()
    root = data_dir(args.data_dir)
    registry = build(root)
    shipped = [f["path"] for f in registry["files"] if f["source"] == "package"]
    if args.check:
        old = json.loads(REGISTRY_PATH.read_text(encoding="utf-8"))
        stale = [rel for rel in shipped if not (SHIPPED_DIR / rel).is_file()
                 or sha256(SHIPPED_DIR / rel) != sha256(root / rel)]
        if old != registry or stale:
            print(f"out of date: {REGISTRY_PATH}" + (f" and {', '.join(stale)}" if stale else ""))
            return 1
        print(f"up to date: {len(registry['files'])} files")
        return 0
    for rel in shipped:
        (SHIPPED_DIR / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, SHIPPED_DIR / rel)
    write_json_atomic(REGISTRY_PATH, registry)
    print(f"wrote {REGISTRY_PATH.relative_to(REPO)}: {len(registry['files'])} files, {len(shipped)} shipped in "
          f"{SHIPPED_DIR.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
