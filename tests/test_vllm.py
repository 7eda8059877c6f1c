"""The vLLM engine next to Hugging Face generate: same record schema, same greedy text on one small model.

Runs where vLLM is importable (``make vllm`` builds .venv-vllm; ``.venv-vllm/bin/python -m pytest tests/test_vllm.py``
after ``.venv-vllm/bin/pip install pytest``); skipped elsewhere. ``make vllm-check`` is the full comparison on
SmolLM2-135M-Instruct with timings (reports/vllm_check.md).
"""
import importlib.util
import json

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed here")


@pytest.fixture(scope="module")
def separated_model(tmp_path_factory, smol_tokenizer):
    """A 2-layer Llama with large weights (well-separated logits, so the two kernels' rounding cannot flip a
    greedy token), saved with SmolLM2's real tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    # head_dim 64: vLLM's CPU attention kernels do not take the tiny head sizes of other tests (16 fails)
    config = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.5, eos_token_id=smol_tokenizer.eos_token_id,
                         pad_token_id=smol_tokenizer.pad_token_id)
    path = tmp_path_factory.mktemp("separated")
    LlamaForCausalLM(config).save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return path


def test_vllm_and_hf_records_agree(separated_model, tmp_path):
    from segkit.evaluate import EvalConfig, run_evaluate

    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": str(i), "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                             for i in range(4)))
    recs = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / f"{engine}.jsonl"
        run_evaluate(EvalConfig(model=str(separated_model), data=[str(bench)], out=str(out), engine=engine, n=2,
                                max_new_tokens=8, device="cpu", dtype="float32", gpu_memory_utilization=0.1))
        recs[engine] = [json.loads(x) for x in out.read_text().splitlines()]
    hf, vl = recs["hf"], recs["vllm"]
    assert [r["id"] for r in hf] == [r["id"] for r in vl] == [f"bench/{i}" for i in range(4)]
    assert all(a.keys() == b.keys() for a, b in zip(hf, vl))
    assert all(len(r["samples"]) == len(r["n_tokens"]) == 2 for r in vl)
    assert [r["samples"] for r in vl] == [r["samples"] for r in hf]  # greedy, float32, the same prompt ids
    assert [r["n_tokens"] for r in vl] == [r["n_tokens"] for r in hf]
