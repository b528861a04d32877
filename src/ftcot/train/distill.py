"""Logit distillation from a teacher's stored top-K log-probabilities.

A teacher that shares the student's tokenizer can give, at every token of its
completion, its K most likely next tokens and their log-probabilities (the
teach store keeps them: ``--teacher-args top_logprobs=K``, read by
:meth:`ftcot.teach.store.TeachStore.top_logprobs`). Fine-tune-CoT trains on
the sampled token only; this adds what the teacher thought of the others:

    loss = CE(student, target) + λ · Σ_t KL( p_T(· | t) ‖ p_S(· | t) )   over the teacher's K tokens at t

Both distributions are renormalised over the teacher's K tokens (the rest of
the vocabulary is unknown: an API returns at most 20), the student's from its
logits at just those K rows of the output layer — ``(N, K)`` logits, never
``(N, vocabulary)``, so it costs nothing next to the cross-entropy.

Forward KL (teacher ‖ student), not reverse: the sequences are the teacher's
samples, and on them forward KL is the maximum-likelihood objective against the
teacher's distribution (word-level KD, Hinton et al. 2015; Kim & Rush 2016) —
the student learns every token the teacher would accept there. Reverse KL
(MiniLLM, GKD's on-policy mode) is mode-seeking and principled on the
*student's* own samples, which an offline store of teacher rationales does not
have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def topk_kl(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, teacher_ids: torch.Tensor,
            teacher_logprobs: torch.Tensor, softcap: float | None = None) -> torch.Tensor:
    """``Σ_rows KL(p_T ‖ p_S)`` over each row's teacher tokens, both renormalised over them.

    ``hidden``: (N, H) the student's hidden states at the completion positions (what predicts each target);
    ``weight``/``bias``: the output layer; ``teacher_ids``: (N, K) token ids, ``-1`` where a position has
    fewer than K (or none: that row adds nothing); ``teacher_logprobs``: (N, K) the teacher's log-probabilities
    of those tokens. ``softcap``: the model's final logit soft-capping (Gemma), applied as in its forward.
    """
    valid = teacher_ids >= 0
    ids = teacher_ids.clamp(min=0)
    rows = weight[ids]  # (N, K, H): the K rows of the output layer each position needs
    logits = torch.einsum("nh,nkh->nk", hidden.to(rows.dtype), rows).float()
    if bias is not None:
        logits = logits + bias[ids].float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    neg = torch.finfo(logits.dtype).min
    student = torch.log_softmax(logits.masked_fill(~valid, neg), dim=-1)
    teacher = torch.log_softmax(teacher_logprobs.float().masked_fill(~valid, neg), dim=-1)
    p = teacher.exp() * valid
    kl = (p * (teacher - student)).masked_fill(~valid, 0.0).sum(-1)
    return (kl * valid.any(-1)).sum()


# ---- the teacher's top-K in a DATA_DIR, aligned with the student's tokens ------------------------------------
#
# ``ftcot curate`` writes TEACHER_LOGPROBS_FILE (when the teacher stored them) beside train.jsonl: one line per training
# example's teacher record (``teacher_record``), the layout of ``ftcot teach export --logprobs``
# (:func:`ftcot.teach.export.logprobs_json`): ``{"teacher_record", "teacher", "k", "ids" | "tokens",
# "logprobs"}``, each token's row ``[written, top 1, …, top K]``. The trainer aligns them here.

from ftcot.curate.logprobs import TEACHER_LOGPROBS_FILE  # noqa: E402  (one name, where curate writes it)
# Positions of the student's completion where the teacher's first token may start: after the template's text
# before the rationale (ft_cot's " " merges into the first word; a byte tokenizer has it as its own token).
MAX_LEAD = 4


def read_teacher_logprobs(data_dir: Any) -> dict[str, dict] | None:
    """``teacher_record`` → its top-K row of DATA_DIR's TEACHER_LOGPROBS_FILE (None: the DATA_DIR has none)."""
    import gzip
    import json
    from pathlib import Path

    from ftcot.errors import FtcotError

    path = Path(data_dir) / TEACHER_LOGPROBS_FILE
    if not path.is_file():
        return None
    rows: dict[str, dict] = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    rows[row["teacher_record"]] = row
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise FtcotError(f"{path}: unreadable ({exc}); curate the DATA_DIR again.") from None
    return rows


@dataclass(frozen=True)
class Aligned:
    """One example's teacher top-K at its completion positions: ``positions`` index the completion's token ids
    (the label positions past the prompt), ``ids``/``logprobs`` are (len(positions), K), -1 / -inf padded."""

    positions: list[int]
    ids: list[list[int]]
    logprobs: list[list[float]]


class TokenMap:
    """The student's id of a teacher token given as text (OpenAI, llama.cpp): the one id it encodes to."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, int | None] = {}

    def __call__(self, token: str) -> int | None:
        if token not in self.cache:
            ids = self.tokenizer(token, add_special_tokens=False)["input_ids"] if token else []
            self.cache[token] = ids[0] if len(ids) == 1 else None
        return self.cache[token]


def teacher_rows(row: dict, tokens: TokenMap, vocab: int) -> tuple[list[int | None], list[list[int]],
                                                                   list[list[float]]]:
    """(written ids, top-K ids, top-K log-probabilities) of a stored row, in the student's vocabulary.

    A written token the student cannot name (text that is not one of its tokens, an id past its vocabulary)
    is None; such an alternative is dropped (-1)."""
    neg = float("-inf")
    values = [[neg if v is None else float(v) for v in r] for r in row["logprobs"]]
    if "ids" in row:
        table = [[int(i) if 0 <= int(i) < vocab else None for i in r] for r in row["ids"]]
    else:
        table = [[tokens(t) if t else None for t in r] for r in row["tokens"]]
    written = [r[0] for r in table]
    ids = [[-1 if i is None or v[j + 1] == neg else i for j, i in enumerate(r[1:])] for r, v in zip(table, values)]
    return written, ids, [v[1:] for v in values]


def align(row: dict, completion_ids: list[int], rationale: str, tokenizer: Any, tokens: TokenMap,
          vocab: int) -> Aligned | str:
    """The teacher's top-K placed on the student's completion tokens, or why they cannot be.

    The teacher's written tokens (all, or all but its leading whitespace-only ones: curation strips the
    rationale) must be the student's completion tokens, id for id, from one of its first MAX_LEAD positions on, at least as far
    as the rationale goes (a rationale's last token may be followed by more of the teacher's text that the
    template replaces, e.g. trailing newlines)."""
    written, ids, logprobs = teacher_rows(row, tokens, vocab)
    trimmed = 0
    while trimmed < len(written) and written[trimmed] is not None and not tokenizer.decode(
            [written[trimmed]]).strip():
        trimmed += 1
    best = (0, 0, 0)  # (teacher start, student start, tokens matched): all of the teacher's tokens where they match
    for start in dict.fromkeys((0, trimmed)):
        for lead in range(min(MAX_LEAD, len(completion_ids))):
            n = 0
            while (start + n < len(written) and lead + n < len(completion_ids)
                   and written[start + n] == completion_ids[lead + n]):
                n += 1
            if n > best[2]:
                best = (start, lead, n)
    start, lead, n = best
    covered = n > 0 and (start + n == len(written)
                         or tokenizer.decode(completion_ids[lead:lead + n]).strip().startswith(rationale.strip()))
    if not covered:
        at = start + n
        theirs = f"id {written[at]}" if at < len(written) and written[at] is not None else "a token it does not have"
        mine = completion_ids[lead + n] if lead + n < len(completion_ids) else None
        return (f"the teacher's token {at} is {theirs}, the student's tokenization of the completion has "
                f"{'id ' + str(mine) if mine is not None else 'nothing'} there")
    span = range(start, start + n)
    return Aligned(list(range(lead, lead + n)), [ids[i] for i in span], [logprobs[i] for i in span])


def attach_teacher(data: Any, items: list, loaded: Any, student: str) -> list:
    """The training rows ``items`` (Tokenized, of ``data.train``) with their teacher top-K at their label
    positions, after checking every row aligns (each failure is one FtcotError line, before any training)."""
    from dataclasses import replace

    from ftcot.errors import FtcotError

    rows = read_teacher_logprobs(data.path)
    if rows is None:
        raise FtcotError(f"--kd-weight: {data.path} has no teacher log-probabilities ({TEACHER_LOGPROBS_FILE}; "
                         f"curation.json's teacher_logprobs says why if some were stored); curate carries them from "
                         f"a teach run made with --teacher-args top_logprobs=5.")
    if data.template.multi_task:
        raise FtcotError(f"--kd-weight distils the teacher's rationale tokens of Fine-tune-CoT data; {data.path} is "
                         f"'{data.template.name}' data. Curate with --template ft_cot.")
    tokenizer = loaded.tokenizer
    vocab = int(loaded.model.get_output_embeddings().weight.shape[0])
    tokens = TokenMap(tokenizer)
    out = []
    for example, item in zip(data.train, items):
        row = rows.get(example.teacher_record or "")
        if row is None:
            raise FtcotError(f"--kd-weight: {data.path / 'train.jsonl'} sample_index {example.sample_index} has no "
                             f"row in {TEACHER_LOGPROBS_FILE} (teacher record {example.teacher_record!r}); "
                             f"curate the DATA_DIR again.")
        offset = 0 if item.encoder_decoder else item.prompt_tokens
        aligned = align(row, item.labels[offset:], example.rationale, tokenizer, tokens, vocab)
        if isinstance(aligned, str):
            raise FtcotError(
                f"--kd-weight: the student's tokenizer ({student}: {type(tokenizer).__name__}, {len(tokenizer)} "
                f"tokens) does not reproduce the tokens of the teacher ({row.get('teacher') or 'unknown'}) on "
                f"{data.path / 'train.jsonl'} sample_index {example.sample_index}: {aligned}. Logit distillation "
                f"compares the two next-token distributions token by token over one vocabulary, so it needs the "
                f"teacher's tokenizer: train a student that shares it, or drop --kd-weight.")
        positions = [offset + p for p in aligned.positions]
        out.append(replace(item, kd=(positions, aligned.ids, aligned.logprobs)))
    return out
