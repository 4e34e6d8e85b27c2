"""Property-based tests of the two small grammars users type: positions (``hooks.positions``) and layers
(``hooks.layers``). Any string either gives in-range indices or raises the typed error (``InputError``,
``LayerError``), one line, never another exception. The profile (fixed, derandomized budget) is in conftest.py;
each defect these tests found is kept as an ``@example``.
"""
from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")

from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hooks.errors import InputError, LayerError  # noqa: E402
from hooks.layers import resolve_layers  # noqa: E402
from hooks.positions import parse_positions, select_positions  # noqa: E402

_int = st.integers(-40, 40).map(str)
_maybe_int = st.one_of(st.just(""), _int)
# strings near the grammar (so most examples parse), mixed with arbitrary text
positions_specs = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["all", "last", "full", " all ", "last:", "slice:", "slice::"]),
    st.builds(lambda k: f"last:{k}", _int),
    st.builds(lambda a, b: f"slice:{a}:{b}", _maybe_int, _maybe_int),
    st.builds(lambda a, b: f"{a}:{b}", _maybe_int, _maybe_int),
    st.lists(_int, min_size=1, max_size=4).map(",".join),
    st.from_regex(r"[-0-9:,a-z ]{0,12}", fullmatch=True),
)


def _one_line(e: Exception) -> None:
    assert str(e) and "\n" not in str(e) and len(str(e)) < 400, str(e)


@given(spec=positions_specs, n_tokens=st.integers(1, 50))
@example(spec="slice:5:2", n_tokens=7)            # selected nothing, and was captured as an empty store
@example(spec="slice::0", n_tokens=7)
@example(spec="slice:5:", n_tokens=3)             # nothing of this text
@example(spec="9" * 5000, n_tokens=7)             # int() refuses over 4300 digits: a ValueError, not an InputError
@example(spec="last:" + "9" * 5000, n_tokens=7)
@example(spec="1\n", n_tokens=7)
@example(spec="\u0663", n_tokens=7)               # a non-ASCII digit
def test_any_positions_string_selects_in_range_tokens_or_is_an_input_error(spec, n_tokens):
    try:
        parsed = parse_positions(spec)
    except InputError as e:
        _one_line(e)
        return
    try:
        picked = select_positions(n_tokens, parsed)
    except InputError as e:
        _one_line(e)
        return
    assert picked and all(isinstance(p, int) and 0 <= p < n_tokens for p in picked), (spec, picked)


@given(spec=st.one_of(st.integers(-2**70, 2**70), st.lists(st.integers(-60, 60), max_size=4),
                      st.builds(slice, st.none() | st.integers(-60, 60), st.none() | st.integers(-60, 60),
                                st.none() | st.integers(-3, 3))),
       n_tokens=st.integers(1, 50))
@example(spec=slice(None, None, 0), n_tokens=5)   # a step of 0 was a ValueError from Python
@example(spec=slice(4, 2), n_tokens=5)
@example(spec=10 ** 30, n_tokens=5)
def test_positions_given_in_python_select_in_range_tokens_or_are_an_input_error(spec, n_tokens):
    try:
        picked = select_positions(n_tokens, spec)
    except InputError as e:
        _one_line(e)
        return
    assert picked and all(0 <= p < n_tokens for p in picked)


_layer = st.one_of(
    st.integers(-40, 40).map(str),
    st.builds(lambda p: f"{p}%", st.one_of(st.integers(-10, 120).map(str), st.floats(allow_nan=True).map(str))),
    st.builds(lambda i: f"blocks.{i}.hook_resid_post", st.integers(-40, 40)),
    st.text(max_size=12),
)
layer_specs = st.one_of(st.text(max_size=30), st.lists(_layer, max_size=4).map(",".join))


@given(spec=layer_specs, n_layers=st.integers(1, 40))
@example(spec="blocks." + "9" * 5000 + ".hook_resid_post", n_layers=4)   # int() of 5000 digits: a ValueError
@example(spec="1" * 5000, n_layers=4)
@example(spec="nan%", n_layers=4)
@example(spec="1e999%", n_layers=4)
@example(spec="blocks.1.hook_resid_post\n", n_layers=4)
def test_any_layers_string_gives_in_range_indices_or_is_a_layer_error(spec, n_layers):
    try:
        layers = resolve_layers(spec, n_layers)
    except LayerError as e:
        _one_line(e)
        return
    assert layers == sorted(set(layers)) and layers and all(0 <= x < n_layers for x in layers), (spec, layers)
