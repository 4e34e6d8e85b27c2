"""``ao data fetch``, ``ao data check``, ``ao data where``: the public data (see :mod:`hooks.data_registry`)."""
from __future__ import annotations

import argparse
import sys

from hooks.data_fetch import DEFAULT_TIMEOUT_S, ENV_URL
from hooks.data_registry import load_registry


def _groups_help() -> str:
    reg = load_registry()
    return "groups:\n" + "\n".join(f"  {name:8s} {g['help']}" for name, g in reg.groups.items())


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="fetch, check or locate the public data (shared/data)",
                       description="The public data the commands read: files at pinned commits of public "
                                   "repositories, each with its sha256 (hooks/data_registry.json).")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    f = dsub.add_parser("fetch", help="download the missing files (verified by sha256, resumable)",
                        description="Download what the data folder lacks into --data-dir, else $AO_DATA_DIR, else\n"
                                    "the user's data folder (the platform's user cache). Each file is checked against\n"
                                    "its sha256 before it takes its name; rerun to resume.",
                        epilog=_groups_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("groups", nargs="*", metavar="GROUP", help="groups to fetch (default: all)")
    f.add_argument("--data-dir", default=None, help="folder to fetch into")
    f.add_argument("--base-url", default=None,
                   help=f"host replacing https://raw.githubusercontent.com, same layout (default: ${ENV_URL})")
    f.add_argument("--retries", type=int, default=2, help="more tries per file (default: %(default)s)")
    f.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the server")
    f.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    f.set_defaults(func=_fetch)
    c = dsub.add_parser("check", help="name every missing or altered file (exit 1 when there is one)",
                        epilog=_groups_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("groups", nargs="*", metavar="GROUP", help="groups to check (default: all)")
    c.add_argument("--data-dir", default=None, help="folder to check (default: the one in use, see `ao data where`)")
    c.set_defaults(func=_check)
    w = dsub.add_parser("where", help="print the data folder the commands read")
    w.add_argument("--data-dir", default=None)
    w.set_defaults(func=_where)
    d.set_defaults(func=lambda a: (d.print_help(), 2)[1])


def _fetch(args: argparse.Namespace) -> int:
    from hooks.data_fetch import fetch
    from hooks.errors import InputError
    from hooks.paths import data_dir, fetch_dir

    folder = fetch_dir(args.data_dir)
    report = fetch(folder, args.groups, url=args.base_url, retries=args.retries, timeout_s=args.timeout_s,
                   progress=not args.no_progress and sys.stderr.isatty())
    what = " ".join(args.groups) or "all"
    n = len(report.fetched)
    print(f"{what}: fetched {n} file{'' if n == 1 else 's'} ({report.bytes_fetched / 1e6:.1f} MB) into {folder}; "
          f"{len(report.present)} {'was' if len(report.present) == 1 else 'were'} already there")
    try:
        used = data_dir(args.data_dir)
    except InputError:
        used = None
    if used is not None and used.resolve() != folder.resolve():
        print(f"note: the commands read {used} first; pass --data-dir {folder} or set AO_DATA_DIR to use this one")
    return 0


def _check(args: argparse.Namespace) -> int:
    from hooks.data_registry import check_folder
    from hooks.paths import data_dir, fetch_dir

    result = check_folder(data_dir(args.data_dir), args.groups)
    for path in result.missing:
        print(f"missing  {path}")
    for path in result.altered:
        print(f"altered  {path}")
    what = " ".join(args.groups) or "all"
    if result.ok:
        print(f"{what}: all {result.checked} files in {result.folder} match the registry")
        return 0
    cmd = " ".join(["ao data fetch", *args.groups])
    if result.folder.resolve() != fetch_dir().resolve():   # where a bare `ao data fetch` would write
        cmd += f" --data-dir {result.folder}"
    print(f"{what}: {len(result.missing)} missing and {len(result.altered)} altered of {result.checked} files in "
          f"{result.folder}: run `{cmd}` to repair")
    return 1


def _where(args: argparse.Namespace) -> int:
    from hooks.paths import data_dir

    print(data_dir(args.data_dir))
    return 0
