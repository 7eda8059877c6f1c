"""Shared fixtures: the real SmolLM2 tokenizer (offline GGUF) and a tiny model of a real architecture."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="session")
def smol_tokenizer():
    from segkit.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model(smol_tokenizer):
    """A randomly initialised 2-layer Llama over SmolLM2's real tokenizer (same classes as the real model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval().requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, smol_tokenizer):
    path = tmp_path_factory.mktemp("tiny_llama")
    tiny_model.save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def write_jsonl(tmp_path):
    def write(name, records):
        path = tmp_path / name
        with path.open("w") as f:
            for r in records:
                f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
        return path
    return write


SHORT = {"id": "s1", "question": "What is 3 + 4?",
         "solution": "3 + 4 = 7.\n\nWait, 4 + 3 = 7 too.\n\nAlternatively, count up: 5, 6, 7.", "answer": "7"}


def tagged(name: str, value, fail_at=None):
    """A stage function for ``run_stage`` tests: adds ``name: value`` to a record, and raises at id ``fail_at``
    (a bad record, or a process killed there)."""
    def fn(rec):
        if rec["id"] == fail_at:
            raise ValueError(f"record {fail_at} fails")
        return {**rec, name: value}
    return fn
