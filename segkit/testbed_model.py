"""The testbed's tokenizer and model: a word-level byte BPE with a ChatML template and a ~1M-parameter Qwen2,
built from the synthetic corpus (``segkit.synth``) and saved like any hub checkpoint.

    >>> tok = build_tokenizer(tokenizer_corpus(records), "runs/testbed/init")
    >>> model = build_model(tok, "tiny", "runs/testbed/init")
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

# the testbed tokenizer: ChatML turns; the generation prompt opens the think block as R1-distilled models do
SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
# pre-tokens: a paragraph break, a word or a run of punctuation with its leading space, a single digit. A space
# before a digit goes to the token before it, so a digit is the same token in " = 7" and in "\boxed{7}": the
# answer is copied, not translated
PRETOKEN_PATTERN = r"\n\n|\n| ?[A-Za-z]+(?: (?=[0-9]))?| ?[^\sA-Za-z0-9]+(?: (?=[0-9]))?|[0-9]|\s+"
MODEL_SIZES = {  # hidden, layers, heads, kv heads, mlp
    "tiny": (128, 4, 4, 4, 384),
    "small": (256, 6, 8, 4, 768),
}


def tokenizer_corpus(records: Iterable[dict]) -> list[str]:
    """The texts a testbed tokenizer is trained on: the prompt's and answer string's fixed words, then every
    record's question and solution, so the words of the traces a model reads are single tokens."""
    from .prompt import ANSWER_TEMPLATE, PROMPT_SUFFIX

    return [PROMPT_SUFFIX, ANSWER_TEMPLATE] + [t for r in records for t in (r["question"], r["solution"])]


def build_tokenizer(texts: Iterable[str], path: str | Path | None = None, vocab_size: int = 2000):
    """A byte-level BPE whose merges run until every frequent word and number is one token (word-level in practice,
    bytes as fallback), wrapped as ``PreTrainedTokenizerFast`` with a ChatML template; saved to ``path`` if given.

    Byte-level pieces keep offsets exact and make ``decode`` return the text as written (spaces included).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>",
                                   unk_token=None, bos_token=None, model_max_length=4096)
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[2:])})
    fast.chat_template = CHAT_TEMPLATE
    if path is not None:
        fast.save_pretrained(str(path))
    return fast


def build_model(tokenizer, size: str = "tiny", path: str | Path | None = None, seed: int = 0):
    """A freshly initialised Qwen2 causal LM sized for the testbed (``tiny`` is about 1M parameters)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    hidden, layers, heads, kv_heads, mlp = MODEL_SIZES[size]
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=mlp,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    if path is not None:
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))
    return model
