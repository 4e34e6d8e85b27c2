"""The query API: ``Oracle.load(path).ask(text_or_acts, question)``."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from hooks.errors import CheckpointError, InputError
from hooks.inject import inject_at
from hooks.layers import Layer, LayerSpec
from hooks.positions import LAST, Positions, PositionsSpec
from hooks.adapter_base import load_adapter_base
from hooks.models import LoadedModel, active_adapter, attach_adapter, load_model

from oracle.core.batching import make_oracle_batch, target_vectors
from oracle.core.card import OracleCard
from oracle.core.confidence import (N_CONTROLS, Answer, Calibration, choice_scores_and_sensitivity, debiased_choice,
                         open_logprobs_and_sensitivity)
from oracle.core.published import CardOverrides, resolve_card
from oracle.core.reference import OracleSpec, parse_oracle_ref
from oracle.core.scaling import InputScaler
from oracle.core.yes_no import YesNo, taught_queries, yes_no_scores, yes_share

log = logging.getLogger(__name__)


@dataclass
class Query:
    """One question about one piece of target activity.

    ``source``: a text (captured from the target inside the oracle) or an activation tensor
    ``(K, D)`` / ``(D,)``. ``positions`` (texts only): the one grammar of :mod:`hooks.positions`
    (``"last"``, ``"all"``, ``"last:K"``, ``"slice:A:B"``, ``"N"``, ``"N,M"``, an int, a list or a slice), parsed
    here into a :class:`hooks.positions.Positions` (a parsed value is kept as it is).

    Example:
        >>> str(Query("The cat sat.", "Which word is this?", positions=" last:2 ").positions)
        'last:2'
    """

    source: Union[str, torch.Tensor]
    question: str
    layer: Optional[Union[LayerSpec, Layer]] = None
    positions: PositionsSpec = LAST

    def __post_init__(self) -> None:
        self.positions = Positions.parse(self.positions)   # the API's edge: parsed once, never again below


class Oracle:
    """An activation oracle: a base model plus a LoRA adapter that reads injected activations.

    Example:
        >>> oracle = Oracle.load("checkpoints/oracle-smollm2-135m")              # doctest: +SKIP
        >>> oracle.ask("The Eiffel Tower is in Paris.", "What is this text about?")  # doctest: +SKIP
        'The Eiffel Tower'
    """

    def __init__(self, lm: LoadedModel, card: OracleCard, trained: bool, scaler: Optional[InputScaler] = None) -> None:
        self.lm = lm
        self.card = card
        self.trained = trained
        self.scaler = scaler
        self.calibration: Optional[Calibration] = None  # set by load() from calibration.json
        self.max_context = int(getattr(lm.model.config, "max_position_embeddings", 2048) or 2048)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: OracleSpec, target_adapter: Optional[Union[str, Path]] = None, device: str = "cpu",
             lm: Optional[LoadedModel] = None, overrides: Optional[CardOverrides] = None,
             dtype: str = "float32") -> "Oracle":
        """Load an oracle checkpoint folder (and optionally the target's own adapter).

        ``path``: a folder (resolved by :func:`oracle.core.reference.parse_oracle_ref`) or an
        :class:`oracle.core.reference.OracleRef` already parsed (its card is not read again). A bare PEFT adapter (no
        ``oracle.json``, e.g. a published Activation Oracle) gets a card derived from its ``adapter_config.json``
        and the Activation Oracle conventions (``oracle.core.published``); ``overrides`` replace card fields
        (``--base``, ``--source-layers``, ...). The card's base-weights hash is checked here, once.

        Example:
            >>> Oracle.load("checkpoints/oracle-smollm2-135m").card.source_layers   # doctest: +SKIP
            [7, 15, 22]
        """
        ref = parse_oracle_ref(path)
        folder, card = ref.path, ref.card
        overrides = overrides or CardOverrides()
        if lm is None and card is not None:
            lm = load_model(overrides.base or card.base_model, device=device, dtype=dtype)
        elif lm is None:
            lm = load_adapter_base(folder, overrides.base, dtype=dtype, device=device)
        if card is not None and lm.weights_hash != card.base_weights_hash:
            raise CheckpointError(f"oracle {folder} was trained on {card.base_model}, not {lm.spec} (another base model: "
                                  f"weights hash {card.base_weights_hash[:12]}..., {lm.spec} has "
                                  f"{lm.weights_hash[:12]}...): use an oracle for this base model")
        card = resolve_card(folder, lm, card, overrides)
        scaler = InputScaler.for_checkpoint(folder, card.input_scaling)
        attach_adapter(lm, folder, name="oracle")
        oracle = cls(lm, card, trained=True, scaler=scaler)
        oracle.calibration = Calibration.load(folder)
        if target_adapter is not None:
            oracle.set_target(target_adapter)
        return oracle

    @classmethod
    def untrained(cls, model: str = "smollm2-135m", lm: Optional[LoadedModel] = None, device: str = "cpu",
                  card: Optional[OracleCard] = None, scaler: Optional[InputScaler] = None) -> "Oracle":
        """The base model with no oracle adapter, same prompt and injection: the Patchscopes-style baseline.
        Give a trained oracle's ``card`` and ``scaler`` (or use :meth:`baseline`) to feed it what that oracle
        reads; with neither it runs with :meth:`OracleCard.for_model` and raw vectors (no oracle to match).

        Example:
            >>> Oracle.untrained().trained          # doctest: +SKIP
            False
        """
        lm = lm or load_model(model, device=device)
        if card is None:
            card = OracleCard.for_model(lm, input_scaling="none" if scaler is None else "standardize")
        return cls.from_model(lm, card=card, trained=False, scaler=scaler)

    @classmethod
    def from_model(cls, lm: LoadedModel, *, card: OracleCard, trained: bool = True,
                   scaler: Optional[InputScaler] = None) -> "Oracle":
        """An Oracle over a model already loaded, with the ``card`` it should use (e.g.
        :meth:`OracleCard.for_model`): for checks on an adapter while it trains (with the run's ``scaler``, if
        it scales its inputs), or, with ``trained=False``, the untrained baseline.

        Example:
            >>> lm = load_model("smollm2-135m")                                                # doctest: +SKIP
            >>> Oracle.from_model(lm, card=OracleCard.for_model(lm), trained=False).trained   # doctest: +SKIP
            False
        """
        return cls(lm, card, trained=trained, scaler=scaler)

    def baseline(self) -> "Oracle":
        """The untrained oracle of this oracle: the same model, card and input scaling, no adapter (so the two
        differ only by the adapter).

        Example:
            >>> Oracle.load("checkpoints/oracle-smollm2-135m").baseline().trained   # doctest: +SKIP
            False
        """
        return Oracle(self.lm, self.card, trained=False, scaler=self.scaler)

    def set_thresholds(self, min_confidence: Optional[float] = None, min_sensitivity: Optional[float] = None) -> None:
        """Replace the abstention thresholds of both answer kinds (``None`` keeps the fitted one; with no
        ``calibration.json`` the temperatures stay 1).

        Example:
            >>> oracle.set_thresholds(min_confidence=0.8)            # doctest: +SKIP
            >>> oracle.calibration.choice.min_confidence              # doctest: +SKIP
            0.8
        """
        if min_confidence is None and min_sensitivity is None:
            return
        self.calibration = (self.calibration or Calibration()).with_thresholds(min_confidence, min_sensitivity)

    def set_target(self, adapter: Optional[Union[str, Path]]) -> None:
        """Attach the audited model's own adapter (named "target"); its activations are then read with it on.

        An adapter for another base model fails to load with a one-line CheckpointError.
        """
        if adapter is None:
            return
        if "target" in self.lm.adapters:
            self.lm.model.delete_adapter("target")
            del self.lm.adapters["target"]
        attach_adapter(self.lm, adapter, name="target")

    @property
    def has_target(self) -> bool:
        """Whether a target adapter is attached."""
        return "target" in self.lm.adapters

    # -- activations --------------------------------------------------------------------------

    def _layer(self, layer: Optional[Union[LayerSpec, Layer]]) -> int:
        if layer is None:
            return self.card.source_layers[len(self.card.source_layers) // 2]
        idx = Layer.parse(layer).resolve(self.lm.n_layers)
        if self.trained and idx not in self.card.source_layers:
            warnings.warn(f"layer {idx} is not one the oracle was trained on ({self.card.source_layers}): answers may be poor",
                          stacklevel=3)
        return idx

    def encode(self, text: str) -> list[int]:
        """Token ids the target reads for ``text``."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("the text is empty: pass the text the target should read")
        ids = self.lm.tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(ids) > self.max_context:   # never read past the model's positions, never cut without a word
            raise InputError(f"the text is {len(ids)} tokens, over the model's {self.max_context}-token context: "
                             "pass a shorter text (or its part the question is about)")
        return ids

    def activations(self, texts: Sequence[str], layer: int, positions: Sequence[PositionsSpec], diff: bool = False,
                    use_target: bool = True) -> list[torch.Tensor]:
        """Target activations ``(K, D)`` for each text (target adapter on when attached; oracle adapter off).
        ``positions``: one spec per text (parsed here unless already a :class:`hooks.positions.Positions`)."""
        ids = [self.encode(t) for t in texts]
        pos = [Positions.parse(p).select(len(i)) for i, p in zip(ids, positions)]
        adapter = "target" if (use_target and self.has_target) else None
        if diff and not self.has_target:
            raise InputError("diff=True needs a target adapter: pass target_adapter= to Oracle.load")
        return target_vectors(self.lm, ids, pos, [layer] * len(ids), adapter=adapter, diff=diff)

    def query_vectors(self, queries: Sequence[Query], diff: bool = False) -> tuple[list[torch.Tensor], list[int]]:
        """Each query's vectors ``(K, D)`` (captured from its text, or its own tensor, unscaled) and its layer."""
        vecs: list[Optional[torch.Tensor]] = [None] * len(queries)
        layers = [self._layer(q.layer) for q in queries]
        by_layer: dict[int, list[int]] = {}
        for i, q in enumerate(queries):
            if isinstance(q.source, torch.Tensor):
                v = q.source.detach().float()
                v = v[None] if v.dim() == 1 else v
                if v.dim() != 2 or v.shape[-1] != self.lm.d_model:
                    raise InputError(f"activations of shape {tuple(q.source.shape)} do not fit the oracle: it reads "
                                     f"vectors of width {self.lm.d_model} (shape (K, {self.lm.d_model}))")
                if not torch.isfinite(v).all():
                    raise InputError(f"activations passed to query {i} hold NaN or inf values: "
                                     "check the capture that produced them")
                vecs[i] = v.to(self.lm.device)
            else:
                by_layer.setdefault(layers[i], []).append(i)
        for layer, idx in by_layer.items():
            got = self.activations([queries[i].source for i in idx], layer, [queries[i].positions for i in idx], diff=diff)
            for i, v in zip(idx, got):
                vecs[i] = v
        return vecs, layers  # type: ignore[return-value]

    # -- asking -------------------------------------------------------------------------------

    def _oracle_ctx(self):
        return active_adapter(self.lm.model, "oracle" if self.trained else None)

    def _batch(self, queries: Sequence[Query], diff: bool, answers: Optional[Sequence[str]] = None):
        vecs, layers = self.query_vectors(queries, diff)
        if self.scaler is not None:
            vecs = [self.scaler(v, L, diff=diff) for v, L in zip(vecs, layers)]
        batch = make_oracle_batch(self.lm.tokenizer, vecs, layers, [q.question for q in queries], answers,
                                  placeholder=self.card.placeholder, max_length=self.max_context,
                                  chat_style=self.card.chat_style)
        return batch.to(self.lm.device)

    def _logits(self, b, keep: int = 1) -> torch.Tensor:
        """Logits of the last ``keep`` positions (the unembedding of a 49k vocabulary at every position
        would cost more than the whole model on CPU)."""
        with self._oracle_ctx(), inject_at(self.lm.model, self.card.injection_layer, b.rows_N, b.positions_N,
                                           b.vectors_ND, self.card.coef):
            return self.lm.model(input_ids=b.tokens_BL, attention_mask=b.mask_BL, position_ids=b.position_ids_BL,
                                 use_cache=False, logits_to_keep=keep).logits.float()

    @torch.no_grad()
    def ask_batch(self, queries: Sequence[Query], diff: bool = False, max_new_tokens: int = 32,
                  batch_size: int = 32) -> list[str]:
        """Answer many queries, batched with left padding and cached greedy generation.

        Example:
            >>> oracle.ask_batch([Query("I love it", "Is the sentiment positive?")])   # doctest: +SKIP
            ['Yes']
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be at least 1 (the answer's length in tokens), not {max_new_tokens!r}")
        answers: list[str] = []
        tok = self.lm.tokenizer
        for s in range(0, len(queries), batch_size):
            chunk = list(queries[s:s + batch_size])
            b = self._batch(chunk, diff)
            with self._oracle_ctx(), inject_at(self.lm.model, self.card.injection_layer, b.rows_N, b.positions_N,
                                               b.vectors_ND, self.card.coef):
                out = self.lm.model.generate(input_ids=b.tokens_BL, attention_mask=b.mask_BL, max_new_tokens=max_new_tokens,
                                             do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            for row in out[:, b.tokens_BL.shape[1]:]:
                answers.append(tok.decode(row, skip_special_tokens=True).strip())
        return answers

    def ask(self, source: Union[str, torch.Tensor], question: str, layer: Optional[Union[LayerSpec, Layer]] = None,
            positions: PositionsSpec = LAST, diff: bool = False, max_new_tokens: int = 32, abstain: bool = False,
            details: bool = False) -> Union[str, Answer]:
        """Ask one question about a text (captured from the target) or activation vectors.

        ``abstain=True`` answers "can't tell" when the answer barely depends on the vectors or its calibrated
        confidence is low (thresholds from ``calibration.json``; see :mod:`oracle.core.confidence`);
        ``details=True`` returns an :class:`Answer` with the confidence (of the first answer token) and the
        sensitivity instead of a string.

        Example:
            >>> oracle.ask("The cat sat on the mat.", "What animal is mentioned?", positions="all")   # doctest: +SKIP
            'A cat'
            >>> oracle.ask("The cat sat on the mat.", "What word is this?", details=True)          # doctest: +SKIP
            Answer(text='.', confidence=0.97, sensitivity=0.41, abstained=False)
        """
        self._check_can_abstain(abstain)
        q = Query(source, question, layer, positions)
        text = self.ask_batch([q], diff=diff, max_new_tokens=max_new_tokens)[0]
        if not (abstain or details):
            return text
        logp, sens = open_logprobs_and_sensitivity(self, [q], diff=diff)
        result = self._judged(text, logp[0], sens[0], "open", abstain)
        return result if details else str(result)

    def _check_can_abstain(self, abstain: bool) -> None:
        if abstain and self.calibration is None:
            raise CheckpointError("this oracle has no calibration.json, so it has no abstention thresholds: run "
                                  "`ao calibrate --oracle <folder>` first")

    def _judged(self, text: str, scores_C: torch.Tensor, sensitivity: float, kind: str, abstain: bool) -> Answer:
        cal = self.calibration or Calibration()
        confidence = float(cal.probabilities(scores_C[None], kind)[0].max())
        return Answer(text, confidence, sensitivity,
                      abstained=abstain and cal.abstains(kind, confidence, sensitivity))

    def sensitivity(self, queries: Sequence[Query], candidates: Optional[Sequence[Sequence[str]]] = None,
                    diff: bool = False, n_controls: int = N_CONTROLS) -> list[float]:
        """How much each answer depends on the vectors: Jensen-Shannon divergence (bits, 0..1) between the answer
        distribution with the real vectors and with control vectors from neutral texts (over ``candidates``
        when given, a choice or a Yes/No question; else over the first answer token).

        Example:
            >>> oracle.sensitivity([Query("I loved it.", "What is the sentiment of this text?", positions="all")],
            ...                    [["negative", "positive"]])                          # doctest: +SKIP
            [0.11]
        """
        if candidates is None:
            return open_logprobs_and_sensitivity(self, queries, diff=diff, n_controls=n_controls)[1]
        return choice_scores_and_sensitivity(self, queries, candidates, diff=diff, n_controls=n_controls)[2]

    def yes_probability_batch(self, queries: Sequence[Query], diff: bool = False, batch_size: int = 32) -> list[float]:
        """P(yes) / (P(yes) + P(no)) of the oracle's first answer token for each query, each side summed over
        its spellings (:func:`oracle.core.yes_no.yes_share`), each question asked as this oracle was taught
        (:func:`oracle.core.yes_no.as_taught`)."""
        return yes_share(self.first_token_logprobs(taught_queries(self, queries), diff=diff, batch_size=batch_size), self.lm.tokenizer).tolist()

    def yes_probability(self, source: Union[str, torch.Tensor], question: str, layer: Optional[Union[LayerSpec, Layer]] = None,
                        positions: PositionsSpec = LAST, diff: bool = False,
                        details: bool = False) -> Union[float, YesNo]:
        """P(yes) of a yes/no question; ``details=True`` returns a :class:`oracle.core.yes_no.YesNo` that also holds
        P(yes) with control vectors (the question's own prior), the log-odds against it and the sensitivity.

        Example:
            >>> oracle.yes_probability("I loved this film.", "Is the sentiment positive?")   # doctest: +SKIP
            0.93
            >>> yn = oracle.yes_probability("Beijing cuts rates.", "Is this about China?", positions="all",
            ...                             details=True)                                     # doctest: +SKIP
            >>> yn.against_control   # log-odds of yes beyond what control vectors get       # doctest: +SKIP
        """
        q = Query(source, question, layer, positions)
        if details:
            return yes_no_scores(self, [q], diff=diff)[0]
        return self.yes_probability_batch([q], diff=diff)[0]

    @torch.no_grad()
    def first_token_logprobs(self, queries: Sequence[Query], diff: bool = False, batch_size: int = 32) -> torch.Tensor:
        """``(N, vocab)`` log-probabilities of the oracle's first answer token for each query: what open
        one-word questions ("Which word is at this position?") are scored on.

        Example:
            >>> lp = oracle.first_token_logprobs([Query("The cat sat.", "Which word is at this position?")])  # doctest: +SKIP
            >>> oracle.lm.tokenizer.decode(lp.argmax(-1))                                                     # doctest: +SKIP
            '.'
        """
        rows = [self._logits(self._batch(list(queries[s:s + batch_size]), diff))[:, -1].log_softmax(-1)
                for s in range(0, len(queries), batch_size)]
        return torch.cat(rows) if rows else torch.empty(0)

    @torch.no_grad()
    def answer_logprobs(self, queries: Sequence[Query], candidates: Sequence[Sequence[str]], diff: bool = False,
                        batch_size: int = 32) -> list[list[float]]:
        """For each query, the summed log-probability of each candidate answer's full token sequence (its
        tokens and the end-of-turn token) after the oracle prompt: the choice scorer.

        Raises InputError for fewer than two candidates, or two that tokenize identically.

        Example:
            >>> oracle.answer_logprobs([Query("I loved it.", "What is the sentiment?")], [["negative", "positive"]])  # doctest: +SKIP
            [[-3.2, -0.1]]
        """
        if len(candidates) != len(queries):
            raise InputError(f"{len(queries)} queries but {len(candidates)} candidate lists: give one list per query")
        flat: list[tuple[int, str]] = []
        for i, cands in enumerate(candidates):
            check_candidates(self.lm.tokenizer, cands)
            flat += [(i, c) for c in cands]
        scores: list[float] = []
        for s in range(0, len(flat), batch_size):
            chunk = flat[s:s + batch_size]
            b = self._batch([queries[i] for i, _ in chunk], diff, answers=[c for _, c in chunk])
            # left padding puts every answer at the end: only the last (longest answer + 1) logits matter
            keep = int((b.labels_BL != -100).sum(1).max()) + 1
            logp = self._logits(b, keep)[:, :-1].log_softmax(-1)
            labels = b.labels_BL[:, -keep + 1:]
            keep = labels != -100
            picked = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
            scores += (picked * keep).sum(1).tolist()
        out: list[list[float]] = []
        cursor = 0
        for cands in candidates:
            out.append(scores[cursor:cursor + len(cands)])
            cursor += len(cands)
        return out

    def choose(self, source: Union[str, torch.Tensor], question: str, candidates: Sequence[str],
               layer: Optional[Union[LayerSpec, Layer]] = None, positions: PositionsSpec = LAST, diff: bool = False,
               abstain: bool = False, details: bool = False) -> Union[str, Answer]:
        """The candidate answer the oracle finds most likely (see :meth:`answer_logprobs`); ``abstain`` and
        ``details`` as in :meth:`ask`: then each candidate is scored against its score with control vectors
        (:func:`oracle.core.confidence.debiased_choice`, which can change the pick when the plain score is mostly
        the answer string's own prior) and the confidence is the calibrated probability of the pick.

        Example:
            >>> oracle.choose("I loved this film.", "What is the sentiment of this text?", ["negative", "positive"])  # doctest: +SKIP
            'positive'
        """
        self._check_can_abstain(abstain)
        q, cands = Query(source, question, layer, positions), list(candidates)
        if abstain or details:   # judged against the control vectors (oracle.core.confidence.debiased_choice)
            raw, prior, sens = choice_scores_and_sensitivity(self, [q], [cands], diff=diff)
            scores = debiased_choice(raw[0], prior[0])
        else:
            scores = self.answer_logprobs([q], [cands], diff=diff)[0]
        text = cands[max(range(len(scores)), key=scores.__getitem__)]
        if not (abstain or details):
            return text
        result = self._judged(text, torch.tensor(scores), sens[0], "choice", abstain)
        return result if details else str(result)


def check_candidates(tokenizer, candidates: Sequence[str]) -> list[str]:
    """Validate the answers of a choice question: at least two, none empty, no two with the same tokens.

    Example:
        >>> from hooks.testing import ByteTokenizer
        >>> check_candidates(ByteTokenizer(), ["yes", "no"])
        ['yes', 'no']
    """
    cands = list(candidates)
    if len(cands) < 2:
        raise InputError(f"a choice question needs at least two candidate answers, got {cands}: add another")
    seen: dict[tuple, str] = {}
    for c in cands:
        if not isinstance(c, str) or not c.strip():
            raise InputError("a candidate answer is empty: give each candidate some text")
        ids = tuple(tokenizer.encode(c, add_special_tokens=False))
        if ids in seen:
            raise InputError(f"candidates {seen[ids]!r} and {c!r} tokenize identically: the oracle cannot tell them "
                             f"apart; drop one")
        seen[ids] = c
    return cands
