"""The text around a trace: the user turn, the answer string, and where the segments' and answer's tokens are.

Shared by attribution (prompt + trace + answer), training (prompt + trace + answer) and evaluation (prompt, then
generate), so every stage sees the model's input exactly the same way: the three parts are tokenized separately and
their ids concatenated (tokenizing them as one text can merge tokens across a boundary).

    >>> answer_text("42")
    ('</think> So, the final answer is \\\\boxed{42}', (40, 42))
    >>> format_prompt(tok, "What is 2+3?")   # chat template when the tokenizer has one  # doctest: +SKIP

Imports no torch at module level (``assemble`` does, when called): the command line reads the defaults here.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

Span = tuple[int, int]  # half-open [start, end)

PROMPT_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
ANSWER_TEMPLATE = "</think> So, the final answer is \\boxed{ANSWER}"


def format_prompt(tokenizer, question: str, suffix: str = PROMPT_SUFFIX) -> str:
    """The user turn as text: the chat template with the generation prompt, or plain text without a template."""
    content = question + suffix
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    return content + "\n"


def answer_text(answer: str, template: str = ANSWER_TEMPLATE) -> tuple[str, tuple[int, int]]:
    """The answer string and the character span of the answer inside ``\\boxed{...}`` (the IG target)."""
    if "ANSWER" not in template:
        raise ValueError(f"answer template {template!r} has no ANSWER placeholder")
    start = template.index("ANSWER")
    return template.replace("ANSWER", answer, 1), (start, start + len(answer))


def encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of ``text`` tokenized on its own (no special tokens added)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def encode_answer(tokenizer, answer, template: str = ANSWER_TEMPLATE) -> tuple[list[int], tuple[int, int]]:
    """The answer string (``template`` with ``answer``, a string or number, in place of ANSWER) as token ids, and
    ``(first, end)``: the tokens ``ids[first:end]`` that cover the answer inside ``\\boxed{}``.

    The span is found from character offsets, not by searching token strings (SmolLM2 splits "boxed" into "box" +
    "ed"); a token that overlaps the answer counts ("}}" closes both ``\\frac{}{}`` and ``\\boxed{}``). Raises
    ``ValueError`` when the answer yields no tokens (an empty answer).
    """
    text, (a0, a1) = answer_text(str(answer), template)
    ids, offsets = encode(tokenizer, text)
    inside = [i for i, (s, e) in enumerate(offsets) if s < a1 and e > a0]
    if not inside or a1 == a0:
        raise ValueError(f"answer {answer!r} yields no tokens inside \\boxed{{}}")
    return ids, (inside[0], inside[-1] + 1)


def char_spans(segments: Sequence[str]) -> list[Span]:
    """Character span of every segment inside ``"".join(segments)``."""
    spans, start = [], 0
    for s in segments:
        spans.append((start, start + len(s)))
        start += len(s)
    return spans


def token_spans(offsets: Sequence[Span], spans: Sequence[Span]) -> list[Span]:
    """Map character spans to token spans through a tokenizer's offset mapping.

    ``offsets[i]`` is the character span of token ``i`` in the text exactly as it was tokenized. A token belongs to
    the segment in which it starts (so a token straddling a boundary is counted once, in the earlier segment);
    tokens without characters (offset ``(0, 0)`` after the first position, e.g. special tokens) follow the
    previous token. Returns contiguous half-open token ranges, one per span, covering all tokens.
    """
    starts = [s for s, _ in spans]
    owner, prev = [], 0
    for i, (a, b) in enumerate(offsets):
        if a == b and i > 0:  # zero-width token
            owner.append(prev)
            continue
        prev = max(bisect.bisect_right(starts, a) - 1, 0)
        # empty segments share a start with the next one: bisect_right picks the last, which is the non-empty one
        owner.append(prev)
    # owners are non-decreasing for monotone offsets; make them so anyway for odd tokenizers (byte-fallback overlaps)
    for i in range(1, len(owner)):
        owner[i] = max(owner[i], owner[i - 1])
    result, t = [], 0
    for k in range(len(spans)):
        t0 = t
        while t < len(owner) and owner[t] == k:
            t += 1
        result.append((t0, t))
    return result


def encode_segments(tokenizer, segments: Sequence[str]) -> tuple[list[int], list[Span], list[Span]]:
    """The trace ``"".join(segments)`` tokenized on its own: ids, character offsets and every segment's token range
    (``token_spans``)."""
    ids, offsets = encode(tokenizer, "".join(segments))
    return ids, offsets, token_spans(offsets, char_spans(segments))


@dataclass
class Assembled:
    """One model input: ids ``(T,)`` and where the trace, its segments and the answer target lie in it."""
    input_ids: "torch.Tensor"        # (T,) prompt + trace + answer string  # noqa: F821 (torch imported lazily)
    trace: tuple[int, int]           # token range of the trace
    segments: list[tuple[int, int]]  # absolute token range of every segment
    targets: "torch.Tensor"          # (A,) positions of the answer tokens inside \boxed{}  # noqa: F821
    pieces: list[list[str]]          # per segment, the text of each of its tokens (they concatenate to the trace)


def assemble(tokenizer, question: str, segments: Sequence[str], answer, answer_template: str = ANSWER_TEMPLATE
             ) -> Assembled:
    """``prompt(question) + "".join(segments) + answer string``, each part tokenized on its own, with the token
    ranges of the trace and of every segment and the positions of the answer tokens (see ``encode_answer``).
    Raises ``ValueError`` for an empty trace or an answer that yields no tokens."""
    import torch

    trace = "".join(segments)
    if not trace.strip():
        raise ValueError("empty solution: nothing to attribute")
    prompt_ids, _ = encode(tokenizer, format_prompt(tokenizer, question))
    trace_ids, offsets, spans = encode_segments(tokenizer, segments)
    answer_ids, (first, end) = encode_answer(tokenizer, answer, answer_template)
    t0 = len(prompt_ids)
    base = t0 + len(trace_ids)
    starts = [s for s, _ in offsets] + [len(trace)]
    pieces_flat = [trace[starts[i]:starts[i + 1]] if i else trace[:starts[1]] for i in range(len(offsets))]
    return Assembled(
        input_ids=torch.tensor(prompt_ids + trace_ids + answer_ids),
        trace=(t0, base),
        segments=[(t0 + s, t0 + e) for s, e in spans],
        targets=torch.arange(base + first, base + end),
        pieces=[pieces_flat[s:e] for s, e in spans],
    )
