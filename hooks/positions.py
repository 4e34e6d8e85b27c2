"""The one positions grammar: which tokens of a text to read, shared by ``ao capture``, ``ao ask`` and the
``Oracle`` API.

========================  ===============================================
``all``                   every token
``last``                  the last token
``last:K``                the last K tokens
``slice:A:B``             a Python slice of the tokens (A or B may be empty or negative)
``N``                     token N (negative counts from the end)
``N,M,...``               those tokens
========================  ===============================================

In Python a position may also be an ``int``, a list of ints or a ``slice``. A position outside the text is an
error naming the text's length, never a silent wrap; so is a spec that selects no token (``slice:5:2`` for every
text, ``slice:4:`` for a text of 3 tokens). The spellings of earlier versions (``full``, ``A:B``) are refused with
the new one named.

A spec is parsed once, where it enters (the command line, the ``Oracle`` API, a capture's config), by
:meth:`Positions.parse` into a :class:`Positions` value; everything below takes that value and only *resolves* it
against a text's length (:meth:`Positions.select`), never parsing it again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, Union

from hooks.errors import InputError

#: what a user may write: a grammar string, an int, a list of ints, a slice, or an already parsed value
PositionsSpec = Union[str, int, Sequence[int], slice, "Positions"]

GRAMMAR = "all, last, last:K, slice:A:B, N or N,M,..."
_SPEC = re.compile(r"^(all|last(?::(\d+))?|slice:(-?\d*):(-?\d*)|-?\d+(?:,-?\d+)*)$")
_OLD = {re.compile(r"^full$"): "all (every token) or last:K", re.compile(r"^(-?\d*):(-?\d*)$"): "slice:{0}:{1}"}


@dataclass(frozen=True, eq=False)
class Positions:
    """A positions spec, parsed: which tokens of a text to read. Made only by :meth:`Positions.parse`;
    :meth:`select` resolves it against a text's length.

    ``spec`` is the spec as written, normalized (a string stripped, a list copied): what a capture records.

    Example:
        >>> pos = Positions.parse(" last:2 ")
        >>> str(pos), pos.select(5), Positions.parse(pos) is pos
        ('last:2', [3, 4], True)
    """

    spec: Union[str, int, list, slice]

    @classmethod
    def parse(cls, spec: PositionsSpec) -> "Positions":
        """The one parse function: a user's spec (see the module's table) as a :class:`Positions`; a value that is
        already one comes back as it is (nothing is checked twice). A bad or old spelling is a one-line InputError.

        Example:
            >>> Positions.parse("3,5").select(8), Positions.parse([0, -1]).select(8)
            ([3, 5], [0, 7])
        """
        if isinstance(spec, Positions):
            return spec
        return cls(parse_positions(spec))

    def select(self, n_tokens: int) -> list[int]:
        """The 0-based token indices picked in a text of ``n_tokens`` tokens (a resolution, not a parse): a
        position outside the text, or a selection of no token, is a one-line InputError naming its length.

        Example:
            >>> Positions.parse("slice:2:4").select(10), Positions.parse(slice(8, None)).select(10)
            ([2, 3], [8, 9])
        """
        n = int(n_tokens)
        out = _select(n, self.spec)
        if not out:
            raise InputError(f"positions {_shown(self.spec)} select no token of a text of {n} tokens: "
                             f"choose positions inside it ({GRAMMAR})")
        return out

    def __str__(self) -> str:
        return self.spec if isinstance(self.spec, str) else repr(self.spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Positions) and type(self.spec) is type(other.spec) and self.spec == other.spec

    def __hash__(self) -> int:
        return hash(str(self))


def parse_positions(spec: PositionsSpec) -> Union[str, int, list, slice]:
    """The grammar's checker: a spec validated and normalized (string specs come back stripped; ints, lists and
    slices unchanged). Called by :meth:`Positions.parse` only; use that.

    Example:
        >>> parse_positions(" last:4 "), parse_positions("3,5"), parse_positions(-1)
        ('last:4', '3,5', -1)
        >>> parse_positions("2:5")
        Traceback (most recent call last):
        ...
        hooks.errors.InputError: positions '2:5' is an old spelling: write slice:2:5 (positions are all, last, last:K, slice:A:B, N or N,M,...)
    """
    if isinstance(spec, slice):
        _check_slice(spec, spec)
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        _check_size([spec])
        return spec
    if isinstance(spec, str):
        s = spec.strip()
        if _SPEC.fullmatch(s):
            if any(len(digits) > 18 for digits in re.findall(r"\d+", s)):
                raise InputError(f"positions {_shown(spec)}: a number of more than 18 digits is no token index")
            if s.startswith("last:") and int(s[5:]) < 1:
                raise InputError(f"positions {_shown(spec)}: last:K needs K >= 1")
            if s.startswith("slice:"):
                a, b = s[6:].split(":")
                _check_slice(slice(int(a) if a else None, int(b) if b else None), spec)
            return s
        for old, new in _OLD.items():
            m = old.fullmatch(s)
            if m:
                raise InputError(f"positions {_shown(spec)} is an old spelling: write {new.format(*m.groups())} "
                                 f"(positions are {GRAMMAR})")
        raise InputError(f"bad positions {_shown(spec)}: use {GRAMMAR}")
    if isinstance(spec, Sequence) and all(isinstance(p, int) and not isinstance(p, bool) for p in spec):
        if not spec:
            raise InputError("positions is an empty list: give at least one token index")
        _check_size(spec)
        return list(spec)
    raise InputError(f"bad positions {_shown(spec)}: use {GRAMMAR}, an int, a list of ints or a slice")


def _check_size(ints: Sequence[int]) -> None:
    if any(abs(p) >= 10 ** 18 for p in ints):
        raise InputError("positions: a number of more than 18 digits is no token index")


def _shown(spec: object) -> str:
    """``repr(spec)``, cut to a readable length for a message."""
    try:
        r = repr(spec)
    except ValueError:   # an int of more digits than Python prints
        return "<a number of over 4300 digits>"
    return r if len(r) <= 60 else r[:57] + "..."


def _check_slice(sl: slice, spec: object) -> None:
    """Refuse a slice that selects no token of any text (``slice:5:2``, ``slice::0``) or has a step of 0."""
    if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in (sl.start, sl.stop, sl.step)):
        raise InputError(f"bad positions {_shown(spec)}: a slice of ints (or None) is needed")
    _check_size([v for v in (sl.start, sl.stop, sl.step) if v is not None])
    if sl.step is not None and sl.step < 1:
        raise InputError(f"positions {_shown(spec)}: a slice step must be >= 1")
    a, b = sl.start, sl.stop
    if b is None:
        return
    if a is None:
        a = 0
    if (a >= 0 and b >= 0 or a < 0 and b < 0) and a >= b:
        raise InputError(f"positions {_shown(spec)} select no token of any text ({a} >= {b}): "
                         f"use slice:A:B with A < B, e.g. slice:{min(a, b)}:{max(a, b) if a != b else a + 1}")


def _one(p: int, n: int) -> int:
    if not -n <= p < n:
        raise InputError(f"position {p} is outside the text, which has {n} tokens: use 0..{n - 1} or -{n}..-1")
    return p % n


#: the two specs the library itself uses, parsed once
ALL, LAST = Positions.parse("all"), Positions.parse("last")


def select_positions(n_tokens: int, spec: PositionsSpec) -> list[int]:
    """The 0-based token indices ``spec`` picks in a text of ``n_tokens`` tokens: :meth:`Positions.parse`, then
    :meth:`Positions.select` (a parsed value is not parsed again).

    Example:
        >>> select_positions(10, "last:3"), select_positions(10, "slice:2:4"), len(select_positions(10, "all"))
        ([7, 8, 9], [2, 3], 10)
        >>> select_positions(10, "-1"), select_positions(10, [0, -2]), select_positions(10, slice(8, None))
        ([9], [0, 8], [8, 9])
    """
    return Positions.parse(spec).select(n_tokens)


def _select(n: int, spec: Union[str, int, list, slice]) -> list[int]:
    if isinstance(spec, int):
        return [_one(spec, n)]
    if isinstance(spec, slice):
        return list(range(n))[spec]
    if isinstance(spec, list):
        return [_one(p, n) for p in spec]
    if spec == "all":
        return list(range(n))
    if spec.startswith("last"):
        k = int(spec[5:]) if ":" in spec else 1
        return list(range(max(0, n - k), n))
    if spec.startswith("slice:"):
        a, b = spec[6:].split(":")
        return list(range(n))[slice(int(a) if a else None, int(b) if b else None)]
    return [_one(int(p), n) for p in spec.split(",")]
