"""The oracle prompt (docs/design.md): one user turn, in the model's chat template with no default
system prompt, whose text is ``f"Layer: {L}\\n" + " ?" * K + " \\n" + question``. The K placeholder
tokens receive the K activation vectors."""
from __future__ import annotations

from dataclasses import dataclass

from hooks.errors import InputError

PROMPT_FORMAT_VERSION = 1
DEFAULT_PLACEHOLDER = " ?"
# How the user turn is put into the chat template (the text inside it is the same either way):
# "strip_system": this project's oracles, any system prompt the template adds by itself is cut out;
# "published": the published Activation Oracles, ``apply_chat_template(..., enable_thinking=False)``
# verbatim (Qwen3 gets its empty think block, Llama 3 keeps its default system header).
CHAT_STYLES = ("strip_system", "published")
DEFAULT_CHAT_STYLE = "strip_system"
_FALLBACK_PLACEHOLDERS = (" ?", "?", " #", " @", " *")
_SENTINEL = "\u00a7SYS\u00a7"


@dataclass
class OraclePrompt:
    """Token ids of a rendered oracle prompt and where its placeholders are.

    Example:
        >>> from oracle.core.prompt import build_prompt
        >>> p = build_prompt(tok, layer=15, k=3, question="What is it?")   # doctest: +SKIP
        >>> len(p.placeholder_positions)                                      # doctest: +SKIP
        3
    """

    input_ids: list[int]
    placeholder_positions: list[int]
    text: str


def placeholder_token(tokenizer, preferred: str = DEFAULT_PLACEHOLDER) -> tuple[str, int]:
    """The placeholder string and its single token id (``" ?"`` unless it is not one token).

    Example:
        >>> placeholder_token(tok)   # doctest: +SKIP
        (' ?', 9148)
    """
    for cand in (preferred, *_FALLBACK_PLACEHOLDERS):
        ids = tokenizer.encode(cand, add_special_tokens=False)
        if len(ids) == 1:
            return cand, ids[0]
    raise InputError("no single-token placeholder found for this tokenizer: pass one with --placeholder")


def render_user_turn(tokenizer, content: str, add_generation_prompt: bool = True,
                     chat_style: str = DEFAULT_CHAT_STYLE) -> str:
    """Render one user turn with the chat template: ``chat_style="strip_system"`` drops any system
    prompt the template adds by itself; ``"published"`` renders as the published Activation Oracle
    code does (``enable_thinking=False``, nothing dropped).

    Example:
        >>> from hooks.testing import ByteTokenizer
        >>> render_user_turn(ByteTokenizer(), "hi")   # no chat template: the text and a newline
        'hi\\n'
    """
    if chat_style not in CHAT_STYLES:
        raise InputError(f"unknown chat style {chat_style!r}: use one of {', '.join(CHAT_STYLES)}")
    if not getattr(tokenizer, "chat_template", None):
        return content if not add_generation_prompt else content + "\n"
    messages = [{"role": "user", "content": content}]
    if chat_style == "published":
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             enable_thinking=False)
    return _strip_default_system(tokenizer, messages, add_generation_prompt)


def _strip_default_system(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    plain = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    head, _ = _system_block_shape(tokenizer)
    if head is None or not plain.startswith(head):
        return plain
    # The template inserted a system turn we did not ask for: cut it out (keep a leading BOS).
    user_start = _user_turn_start(tokenizer, plain, messages[0]["content"])
    bos = tokenizer.bos_token or ""
    keep = bos if bos and plain.startswith(bos) and not plain[user_start:].startswith(bos) else ""
    return keep + plain[user_start:]


def _system_block_shape(tokenizer) -> tuple:
    """Text that opens a system turn (``"<|im_start|>system\\n"``), or None if the template has none."""
    try:
        with_sys = tokenizer.apply_chat_template(
            [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": "x"}], tokenize=False
        )
    except Exception:  # noqa: BLE001 - templates that refuse system turns have no default one either
        return None, None
    idx = with_sys.find(_SENTINEL)
    if idx <= 0:
        return None, None
    return with_sys[:idx], with_sys[idx + len(_SENTINEL):]


def _user_turn_start(tokenizer, rendered: str, content: str) -> int:
    """Index where the user turn's header starts in ``rendered`` (the last special token before 'user')."""
    c = rendered.find(content)
    u = rendered.rfind("user", 0, c)
    if u < 0:
        raise InputError("cannot find the user turn in the chat template's output")
    specials = sorted({t for t in getattr(tokenizer, "all_special_tokens", []) if t} |
                      {t.content if hasattr(t, "content") else str(t)
                       for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}, key=len, reverse=True)
    best = u
    for sp in specials:
        j = rendered.rfind(sp, 0, u + 1)
        if j >= 0 and j + len(sp) <= u and rendered[j + len(sp):u].strip() == "":
            best = min(best, j)
    return best


def prompt_text(layer: int, k: int, question: str, placeholder: str = DEFAULT_PLACEHOLDER) -> str:
    """The user-turn text of the oracle prompt.

    Example:
        >>> prompt_text(15, 3, "What is it?")
        'Layer: 15\\n ? ? ? \\nWhat is it?'
    """
    if k < 1:
        raise InputError("an oracle prompt needs at least one activation vector")
    return f"Layer: {layer}\n" + placeholder * k + " \n" + question


_PROMPT_CACHE: dict = {}


def build_prompt(tokenizer, layer: int, k: int, question: str, placeholder: str = DEFAULT_PLACEHOLDER,
                 max_length: int | None = None, chat_style: str = DEFAULT_CHAT_STYLE) -> OraclePrompt:
    """Render the oracle prompt and find its K placeholder positions.

    Example:
        >>> p = build_prompt(tok, 15, 2, "Is this positive?")   # doctest: +SKIP
        >>> [p.input_ids[i] for i in p.placeholder_positions]  # doctest: +SKIP
        [9148, 9148]
    """
    if not question or not question.strip():
        raise InputError("the question is empty: ask something, e.g. 'What is the model thinking about?'")
    # Rendering a chat template costs ~1 ms; training renders the same (layer, K, question) many times.
    key = (id(tokenizer), layer, k, question, placeholder, chat_style)
    hit = _PROMPT_CACHE.get(key)
    if hit is None:
        hit = _build_prompt(tokenizer, layer, k, question, placeholder, chat_style)
        if len(_PROMPT_CACHE) > 200_000:
            _PROMPT_CACHE.clear()
        _PROMPT_CACHE[key] = hit
    if max_length is not None and len(hit.input_ids) > max_length:
        raise InputError(
            f"the oracle prompt is {len(hit.input_ids)} tokens, over the {max_length}-token context: shorten the "
            f"question or inject fewer positions"
        )
    return OraclePrompt(list(hit.input_ids), list(hit.placeholder_positions), hit.text)


def _build_prompt(tokenizer, layer: int, k: int, question: str, placeholder: str, chat_style: str) -> OraclePrompt:
    ph, ph_id = placeholder_token(tokenizer, placeholder)
    text = render_user_turn(tokenizer, prompt_text(layer, k, question, ph), chat_style=chat_style)
    ids = tokenizer.encode(text, add_special_tokens=False)
    # The placeholders are the K consecutive placeholder tokens right after "Layer: L\n".
    run_start = None
    for i in range(len(ids) - k + 1):
        if all(ids[i + j] == ph_id for j in range(k)):
            run_start = i
            break
    if run_start is None:
        raise InputError(f"the placeholder {ph!r} did not survive tokenization as {k} tokens: choose another placeholder")
    return OraclePrompt(input_ids=ids, placeholder_positions=list(range(run_start, run_start + k)), text=text)
