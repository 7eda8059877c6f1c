"""The text around a trace: the user turn, the answer string, and where the answer tokens are.

Shared by attribution (prompt + trace + answer), training (prompt + trace) and evaluation (prompt, then generate),
so every stage sees the model's input exactly the same way.

    >>> format_prompt(tok, "What is 2+3?")   # chat template when the tokenizer has one
"""
from __future__ import annotations

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
