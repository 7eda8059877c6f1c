"""Loss masks per mode (checked by decoding the trained tokens), the collator's labels, all-masked examples skipped,
a real Trainer run."""
import importlib.util
import json
import logging
import math

import pytest

from segkit import prompt
from segkit.finetune import fit
from segkit.modes import MODES, segments_for_mode
from segkit.records import dump
from segkit.roles import USEFUL
from segkit.score import always_kept
from segkit.segment import segment
from segkit.synth import SynthConfig, make_records
from segkit.testbed_model import tokenizer_corpus
from segkit.train import MaskCollator, TrainConfig, build_example, build_model, build_tokenizer, prepare

SMALL = dict(chain_length=2, distractors=1, redundant=1.0)  # short traces keep the Trainer run to seconds


@pytest.fixture(scope="module")
def records():
    recs = make_records(SynthConfig(out="", n=40, seed=7, **SMALL))
    for r in recs:  # a selection that leaves gaps, as `segkit select` would; scores whose top-k is known
        n = len(segment(r["solution"]))
        r["selected_spans_ids"] = list(range(1, n - 2, 2))
        r["strength"] = [1.0 if i == 1 else 0.0 for i in range(n)]
        r["segment_log_perplexity"] = [0.1 * i for i in range(n)]
        r["segment_entropy"] = [0.1 * (n - i) for i in range(n)]
        r["attributions"] = [[0.0] * (1 + i % 3) for i in range(n)]  # token counts for the token-matched modes
    return recs


@pytest.fixture(scope="module")
def tok(records, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_tokenizer(tokenizer_corpus(records), path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def runs(indices):
    """Consecutive indices grouped: [1, 2, 4] -> [[1, 2], [4]]."""
    out = []
    for i in indices:
        if out and out[-1][-1] == i - 1:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def trained_texts(tok, ex):
    """The text of every contiguous run of trained tokens."""
    texts, cur = [], []
    for i, trained in zip(ex["input_ids"], ex["loss_mask"]):
        if trained:
            cur.append(i)
        elif cur:
            texts.append(tok.decode(cur)), cur.clear()
    return texts + ([tok.decode(cur)] if cur else [])


def test_tokenizer_round_trips_with_offsets(tok, records):
    sol = records[0]["solution"]
    ids, offsets = prompt.encode(tok, sol)
    assert tok.decode(ids) == sol
    assert [sol[a:b] for a, b in offsets] == [tok.decode([i]) for i in ids]
    assert len(ids) < len(sol.split()) * 2  # words and numbers are whole tokens
    assert prompt.format_prompt(tok, "Q?").endswith("<think>\n")


def expected_choice(rec, mode, n):
    """The segments each mode must train, worked out from the record's fields by hand (not by the code's rule)."""
    k = len(rec["selected_spans_ids"])
    return {"full": list(range(n)), "selective": rec["selected_spans_ids"], "pruned": rec["selected_spans_ids"],
            "strength-only": [1],  # all the strength is on segment 1
            "perplexity": list(range(n - k, n)), "entropy": list(range(k)),  # increasing / decreasing scores
            "oracle": [i for i, r in enumerate(rec["segment_roles"]) if r in USEFUL]}.get(mode)


@pytest.mark.parametrize("mode", MODES)
def test_trained_tokens_are_exactly_the_chosen_segments(tok, records, mode):
    for rec in records:
        segs = segment(rec["solution"])
        chosen = expected_choice(rec, mode, len(segs))
        if chosen is None:  # random (as many as the selection) and the token-matched controls, reproducibly per trace
            chosen = segments_for_mode(rec, mode, seed=3)
            assert mode != "random" or len(chosen) == len(rec["selected_spans_ids"])
            assert set(chosen) <= set(range(len(segs)))
            assert chosen == segments_for_mode(rec, mode, seed=3)
        kept = sorted(set(chosen) | set(always_kept(len(segs))))
        assert segments_for_mode(rec, mode, seed=3) == sorted(chosen)
        ex = build_example(tok, rec, mode, seed=3)
        prompt_ids = prompt.encode(tok, prompt.format_prompt(tok, rec["question"]))[0]
        assert ex["input_ids"][:len(prompt_ids)] == prompt_ids and set(ex["loss_mask"][:len(prompt_ids)]) == {0}
        assert set(ex["loss_mask"]) <= {0, 1} and len(ex["loss_mask"]) == len(ex["input_ids"])
        closing = prompt.answer_text(rec["answer"])[0] + tok.eos_token  # the think block closed with the answer
        if mode == "pruned":
            text = "".join(segs[i] for i in kept)
            expected = [text + closing]
        else:
            text = rec["solution"]
            expected = ["".join(segs[i] for i in run) for run in runs(kept)]
            expected[-1] += closing  # the last segment is kept, so the answer string and eos are trained
        assert tok.decode(ex["input_ids"][len(prompt_ids):]) == text + closing
        assert trained_texts(tok, ex) == expected
        bare = build_example(tok, rec, mode, seed=3, answer_template=None)
        assert tok.decode(bare["input_ids"][len(prompt_ids):]) == text + tok.eos_token


@pytest.fixture(scope="module")
def byte_tok(records):
    """The testbed tokenizer with no merges: one token per byte (special tokens whole), so counts are by hand."""
    from segkit.testbed_model import SPECIAL_TOKENS

    return build_tokenizer([r["solution"] for r in records], vocab_size=256 + len(SPECIAL_TOKENS))


@pytest.mark.parametrize("mode, keep, template, fraction", [
    ("selective", [], "", 9 / 16),        # segments 1, 2: 4 + 5 of 15 trace bytes + eos; eos goes with the last
    ("pruned", [], "", 10 / 16),          # the same 9 bytes, now ending the text, so eos is trained too
    ("full", [], "", 16 / 16),
    ("selective", ["last"], "", 13 / 16),  # + segment 3 (3 bytes) and eos
    # the answer string: "</think>" (one special token) + " So, the final answer is \\boxed{4}" (34 bytes)
    ("selective", ["last"], prompt.ANSWER_TEMPLATE, (12 + 35 + 1) / (15 + 35 + 1)),
    ("pruned", ["first"], prompt.ANSWER_TEMPLATE, (3 + 9 + 35 + 1) / (15 + 35 + 1)),  # the pruned text ends trained
])
def test_trained_token_fraction_by_hand(byte_tok, mode, keep, template, fraction):
    rec = {"id": "h", "question": "Q", "segments": ["Go.", " x1.", " y22.", " z."], "answer": "4",
           "selected_spans_ids": [1, 2]}
    assert [len(prompt.encode(byte_tok, s)[0]) for s in rec["segments"]] == [3, 4, 5, 3]
    _, stats = prepare(byte_tok, [rec], TrainConfig(data="", out="", mode=mode, always_keep=keep,
                                                     answer_template=template))
    assert stats["trained_tokens"] / stats["trace_tokens"] == pytest.approx(fraction, abs=1e-12)


def test_training_and_attribution_read_the_same_ids(tok, records, smol_tokenizer):
    """The full-mode example is prompt + trace + answer string (+ eos), token for token what attribution reads."""
    for t in (tok, smol_tokenizer):
        for rec in records[:5]:
            segs = segment(rec["solution"])
            ex = build_example(t, rec, "full")
            assert ex["input_ids"] == prompt.assemble(t, rec["question"], segs, rec["answer"]).input_ids.tolist() + \
                [t.eos_token_id]


@pytest.mark.parametrize("side", ["right", "left"])
def test_collator_labels_are_the_masked_tokens_padded_as_the_tokenizer_pads(tok, records, smol_tokenizer, side):
    """One collator turns masks into labels: the same batch transformers' Seq2Seq collator makes from the labels
    ``input_ids`` with -100 outside the mask (what segkit trained on before masks were data)."""
    from transformers import DataCollatorForSeq2Seq

    for t in (tok, smol_tokenizer):
        t.padding_side = side
        examples = [build_example(t, rec, "selective", max_length=40 + 30 * i) for i, rec in enumerate(records[:3])]
        batch = MaskCollator(t.pad_token_id, side)(examples)
        labelled = [{"input_ids": ex["input_ids"], "labels": [i if m else -100 for i, m in
                                                              zip(ex["input_ids"], ex["loss_mask"])]}
                    for ex in examples]
        reference = DataCollatorForSeq2Seq(t, padding=True, label_pad_token_id=-100)(labelled)
        t.padding_side = "right"
        assert batch.keys() == reference.keys() and len({len(ex["input_ids"]) for ex in examples}) == 3
        for k in batch:
            assert batch[k].dtype == reference[k].dtype and batch[k].tolist() == reference[k].tolist(), k


def test_other_modes_pick_as_many_segments_as_the_selection(records):
    n = len(segment(records[0]["solution"]))
    rec = dict(records[0], strength=[1.0] + [0.0] * (n - 1))
    k = len(rec["selected_spans_ids"])
    assert segments_for_mode(rec, "random", seed=1) == segments_for_mode(rec, "random", seed=1)
    assert len(segments_for_mode(rec, "random", seed=1)) == k
    assert segments_for_mode(rec, "perplexity") == list(range(n - k, n))
    assert segments_for_mode(rec, "entropy") == list(range(k))
    assert segments_for_mode(rec, "strength-only", tau=0.7) == [0]


@pytest.mark.parametrize("mode, field", [("selective", "selected_spans_ids"), ("random", "selected_spans_ids"),
                                         ("strength-only", "strength"), ("perplexity", "segment_log_perplexity"),
                                         ("entropy", "segment_entropy"), ("oracle", "segment_roles")])
def test_missing_field_is_named(records, mode, field):
    rec = {k: v for k, v in records[0].items() if k not in (field, "selected_spans_ids")}
    rec["selected_spans_ids"] = [1] if field != "selected_spans_ids" else None
    if rec["selected_spans_ids"] is None:
        del rec["selected_spans_ids"]
    with pytest.raises(ValueError, match=f"mode '{mode}' needs the record field '{field}'"):
        segments_for_mode(rec, mode)
    with pytest.raises(ValueError, match="unknown mode"):
        segments_for_mode(records[0], "everything")


def test_modes_say_what_they_train_and_which_cannot_run_on_real_data(records):
    from segkit import modes

    assert all(modes.describe(m) for m in MODES) and len(set(map(modes.describe, MODES))) == len(MODES)
    real = [{k: v for k, v in r.items() if k != "segment_roles"} for r in records[:3]]
    assert modes.unavailable(list(MODES), records[:3]) == {}
    why = modes.unavailable(["full", "oracle", "selective"], records[:2] + real[:1])
    assert list(why) == ["oracle"] and "segment_roles" in why["oracle"] and "segkit synth" in why["oracle"]
    # fields a stage makes are not reasons: the pipeline attributes and selects before it trains
    bare = [{"question": r["question"], "solution": r["solution"]} for r in real]
    assert modes.unavailable(["selective", "perplexity"], bare) == {}
    with pytest.raises(ValueError, match="unknown mode 'everything'"):
        modes.unavailable(["everything"], records[:1])


def test_all_masked_examples_are_skipped_with_a_warning(tok, records, caplog):
    empty = dict(records[0], id="empty", selected_spans_ids=[])
    cfg = TrainConfig(data="", out="", mode="selective", always_keep=[])
    with caplog.at_level(logging.WARNING, logger="segkit"):
        examples, stats = prepare(tok, [empty, records[1]], cfg)
    assert stats["n_skipped"] == 1 and len(examples) == 1 and "'empty'" in caplog.text
    # cut by max_length before the first trained token: skipped and counted as truncated
    examples, stats = prepare(tok, [records[2]], TrainConfig(data="", out="", mode="selective", max_length=10))
    assert stats == dict(stats, n_skipped=1, n_truncated=1) and not examples


def test_trainer_run_saves_a_loadable_model(records, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = tmp_path / "data.jsonl"
    dump([dict(r, selected_spans_ids=[0] if i else []) for i, r in enumerate(records[:16])], data)
    out = tmp_path / "model"
    cfg = TrainConfig(data=str(data), out=str(out), mode="selective", epochs=1, batch_size=8, always_keep=[])
    assert "selective: 15 examples (1 skipped" in fit(cfg)  # the first record has nothing to train
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["n_examples"] == 15 and summary["n_skipped"] == 1 and math.isfinite(summary["train_loss"])
    assert 0 < summary["trained_token_fraction"] < 1
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.model_type == "qwen2" and model.config.vocab_size == len(tok)
    # fine-tuning the saved folder goes through the shared loader
    again = fit(TrainConfig(data=str(data), out=str(tmp_path / "again"), init=str(out), mode="full",
                            epochs=1, batch_size=16, limit=8))
    assert "8 examples" in again


def test_saved_testbed_model_reads_text_as_it_was_trained(records, tmp_path):
    """A Qwen2 config next to the tokenizer made AutoTokenizer load Qwen2Tokenizer, whose own pre-tokenizer split
    " modulo 10" into " modul", "o", " ", ...: the model then read text unlike anything it was trained on."""
    from segkit.models import load_model

    trained = build_tokenizer(tokenizer_corpus(records))
    build_model(trained, path=tmp_path)
    _, loaded = load_model(str(tmp_path), device="cpu", dtype="float32")
    for r in records[:5]:
        text = prompt.format_prompt(trained, r["question"]) + r["solution"]
        ids = [t(text, add_special_tokens=False)["input_ids"] for t in (loaded, trained)]
        assert ids[0] == ids[1]
    assert loaded.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == \
        trained.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)


def test_tiny_model_is_about_a_million_parameters(tok):
    n = sum(p.numel() for p in build_model(tok).parameters())
    assert 0.5e6 < n < 1.5e6


# --- options at the paper's scale ---------------------------------------------------------------------------------

def test_bad_options_are_one_line_errors(capsys, monkeypatch):
    import torch

    from segkit.cli import main

    cases = [(["--batch-size", "0"], "--batch-size must be at least 1"),
             (["--grad-accum", "0"], "--grad-accum must be at least 1"),
             (["--warmup-ratio", "1.5"], "--warmup-ratio"), (["--bf16", "--fp16"], "exclude each other")]
    if importlib.util.find_spec("flash_attn") is None:
        cases.append((["--attn-implementation", "flash_attention_2"], "needs the flash-attn package"))
    if not torch.cuda.is_available():
        cases.append((["--fp16"], "--fp16 needs a CUDA GPU"))
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # this machine: an AVX2 EPYC
            cases.append((["--bf16"], "has no bfloat16 arithmetic"))
    for args, message in cases:
        assert main(["train", "in.jsonl", "--out", "x", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    # a second, silent precision setting from an accelerate config is refused
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ValueError, match="set mixed_precision: 'no'"):
        TrainConfig(data="", out="")


def test_max_length_defaults_to_the_longest_and_cuts_are_counted(tok, records, caplog):
    examples, stats = prepare(tok, records[:6], TrainConfig(data="", out="", mode="full"))
    longest = max(len(e["input_ids"]) for e in examples)
    assert stats["n_truncated"] == 0 and stats["max_length"] == longest
    cut_at = sorted(len(e["input_ids"]) for e in examples)[2]  # three examples are longer than this
    with caplog.at_level(logging.WARNING, logger="segkit"):
        examples, stats = prepare(tok, records[:6], TrainConfig(data="", out="", mode="full", max_length=cut_at))
    n_longer = sum(len(build_example(tok, r, "full")["input_ids"]) > cut_at for r in records[:6])
    assert stats["n_truncated"] == n_longer >= 1 and max(len(e["input_ids"]) for e in examples) == cut_at
    assert f"{n_longer} of 6 examples cut to --max-length {cut_at} tokens" in caplog.text


def test_output_folder_must_not_be_the_init_folder(records, tmp_path):
    from segkit.records import OutputError

    data = tmp_path / "data.jsonl"
    dump(records[:2], data)
    build_model(build_tokenizer([r["solution"] for r in records], tmp_path / "init"), path=tmp_path / "init")
    for out in (tmp_path / "init", tmp_path / "init" / "ft"):
        with pytest.raises(OutputError, match="init"):
            fit(TrainConfig(data=str(data), out=str(out), init=str(tmp_path / "init")))


def test_lora_trains_adapters_and_saves_a_merged_model(records, tmp_path):
    import torch

    from segkit.models import load_model

    data, init, out = tmp_path / "data.jsonl", tmp_path / "init", tmp_path / "lora"
    dump(records[:8], data)
    tok = build_tokenizer(tokenizer_corpus(records))
    build_model(tok, path=init)
    line = fit(TrainConfig(data=str(data), out=str(out), init=str(init), mode="full", epochs=2, batch_size=4,
                           lr=1e-2, lora_r=4, gradient_checkpointing=True, grad_accum=2))
    assert "8 examples" in line
    summary = json.loads((out / "train_summary.json").read_text())
    assert 0 < summary["n_trainable"] < summary["n_params"] / 10  # only the adapters trained
    before, _ = load_model(str(init), device="cpu", dtype="float32")
    after, _ = load_model(str(out), device="cpu", dtype="float32")  # an ordinary folder: adapter merged
    b, a = before.state_dict(), after.state_dict()
    assert a.keys() == b.keys()
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"], b["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(a["model.embed_tokens.weight"], b["model.embed_tokens.weight"])  # LoRA leaves it alone


def test_lora_on_a_model_without_linear_layers_is_refused(smol_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    from segkit.finetune import add_lora

    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=16, num_hidden_layers=0,
                                         num_attention_heads=2, intermediate_size=32))  # embeddings and head only
    with pytest.raises(ValueError, match="has no linear layers to adapt"):
        add_lora(model, TrainConfig(data="", out="", lora_r=4, init="llama-0-layers"))


@pytest.mark.slow
def test_smollm2_from_gguf_fine_tunes_saves_reloads_and_generates(records, tmp_path, smol_tokenizer):
    """The real pretrained LM, read from its GGUF file: the quantizer's marks used to stop the Trainer ("purely
    quantized models") and save_pretrained ("not serializable")."""
    import torch
    from transformers import AutoConfig

    from segkit.generation import HFEngine
    from segkit.models import load_model

    data, out = tmp_path / "sel.jsonl", tmp_path / "ft"
    dump(records[:2], data)
    # cut a few tokens into the trace (always-kept first segment): short steps, and the cut is counted
    n_prompt = max(len(prompt.encode(smol_tokenizer, prompt.format_prompt(smol_tokenizer, r["question"]))[0])
                   for r in records[:2])
    line = fit(TrainConfig(data=str(data), out=str(out), init="smollm2-135m-instruct", mode="selective",
                           epochs=1, batch_size=2, lr=1e-4, warmup_ratio=0.0, max_length=n_prompt + 8,
                           always_keep=["first"]))  # no warmup: the one step has a learning rate
    assert "2 examples" in line and f"2 cut to {n_prompt + 8} tokens" in line
    assert AutoConfig.from_pretrained(str(out)).model_type == "llama"
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    model, tok = load_model(str(out), device="cpu", dtype="float32")
    base, _ = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    assert not torch.equal(model.lm_head.weight, base.lm_head.weight)  # trained, and saved trained
    sample = HFEngine(model, tok).sample(["What is 2 + 3?"], max_new_tokens=8)[0][0]
    assert sample["n_tokens"] > 0 and sample["text"].strip()


def test_accelerate_configs_leave_precision_and_checkpointing_to_the_options():
    """One way to set them: `segkit train --bf16 --gradient-checkpointing --grad-accum`, never also the yaml."""
    from pathlib import Path

    import yaml

    import segkit

    files = sorted((Path(segkit.__file__).parent / "configs" / "accelerate").glob("*.yaml"))
    assert len(files) >= 4
    for f in files:
        cfg = yaml.safe_load(f.read_text())
        assert cfg["mixed_precision"] == "no", f
        assert "fsdp_activation_checkpointing" not in cfg.get("fsdp_config", {}), f
        assert "gradient_accumulation_steps" not in cfg.get("deepspeed_config", {}), f
