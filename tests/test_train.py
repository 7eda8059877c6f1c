"""Label masks per mode (checked by decoding the trained tokens), all-masked examples skipped, a real Trainer run."""
import json
import logging
import math

import pytest

from segkit import prompt as P
from segkit.records import dump
from segkit.score import always_kept
from segkit.segment import segment
from segkit.synth import USEFUL, SynthConfig, generate
from segkit.train import (TrainConfig, build_example, build_model, build_tokenizer, prepare, run_train,
                          segments_for_mode)

SMALL = dict(steps=2, distractors=1, redundant=1.0)  # short traces keep the Trainer run to seconds


@pytest.fixture(scope="module")
def records():
    recs = generate(SynthConfig(out="", n=40, seed=7, **SMALL))
    for r in recs:  # a selection that leaves gaps, as `segkit select` would
        n = len(segment(r["solution"]))
        r["selected_spans_ids"] = list(range(1, n - 2, 2))
    return recs


@pytest.fixture(scope="module")
def tok(records, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_tokenizer([P.PROMPT_SUFFIX, P.ANSWER_TEMPLATE] + [r["question"] + r["solution"] for r in records], path)
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
    for i, label in zip(ex["input_ids"], ex["labels"]):
        if label != -100:
            assert label == i
            cur.append(i)
        elif cur:
            texts.append(tok.decode(cur)), cur.clear()
    return texts + ([tok.decode(cur)] if cur else [])


def test_tokenizer_round_trips_with_offsets(tok, records):
    sol = records[0]["solution"]
    ids, offsets = P.encode(tok, sol)
    assert tok.decode(ids) == sol
    assert [sol[a:b] for a, b in offsets] == [tok.decode([i]) for i in ids]
    assert len(ids) < len(sol.split()) * 2  # words and numbers are whole tokens
    assert P.format_prompt(tok, "Q?").endswith("<think>\n")


@pytest.mark.parametrize("mode", ["selective", "full", "pruned", "oracle"])
def test_trained_tokens_are_exactly_the_chosen_segments(tok, records, mode):
    for rec in records:
        segs = segment(rec["solution"])
        chosen = {"full": range(len(segs)), "oracle": [i for i, r in enumerate(rec["segment_roles"]) if r in USEFUL]
                  }.get(mode, rec["selected_spans_ids"])
        kept = sorted(set(chosen) | set(always_kept(len(segs))))
        assert segments_for_mode(rec, mode) == sorted(chosen)
        ex = build_example(tok, rec, mode)
        prompt_ids = P.encode(tok, P.format_prompt(tok, rec["question"]))[0]
        assert ex["input_ids"][:len(prompt_ids)] == prompt_ids and set(ex["labels"][:len(prompt_ids)]) == {-100}
        closing = P.answer_text(rec["answer"])[0] + tok.eos_token  # the think block closed with the answer
        if mode == "pruned":
            text = "".join(segs[i] for i in kept)
            expected = [text + closing]
        else:
            text = rec["solution"]
            expected = ["".join(segs[i] for i in run) for run in runs(kept)]
            expected[-1] += closing  # the last segment is kept, so the answer string and eos are trained
        assert tok.decode(ex["input_ids"][len(prompt_ids):]) == text + closing
        assert trained_texts(tok, ex) == expected
        bare = build_example(tok, rec, mode, answer_template=None)
        assert tok.decode(bare["input_ids"][len(prompt_ids):]) == text + tok.eos_token


def test_other_modes_pick_as_many_segments_as_the_selection(records):
    rec = dict(records[0], segment_log_perplexity=[0.1 * i for i in range(20)], strength=[1.0] + [0.0] * 19)
    n = len(segment(rec["solution"]))
    rec["segment_log_perplexity"] = rec["segment_log_perplexity"][:n]
    rec["segment_entropy"] = rec["segment_log_perplexity"][::-1]
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
    assert "selective: 15 examples (1 skipped" in run_train(cfg)  # the first record has nothing to train
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["n_examples"] == 15 and summary["n_skipped"] == 1 and math.isfinite(summary["train_loss"])
    assert 0 < summary["trained_token_fraction"] < 1
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.model_type == "qwen2" and model.config.vocab_size == len(tok)
    # fine-tuning the saved folder goes through the shared loader
    again = run_train(TrainConfig(data=str(data), out=str(tmp_path / "again"), init=str(out), mode="full",
                                  epochs=1, batch_size=16, limit=8))
    assert "8 examples" in again


def test_saved_testbed_model_reads_text_as_it_was_trained(records, tmp_path):
    """A Qwen2 config next to the tokenizer made AutoTokenizer load Qwen2Tokenizer, whose own pre-tokenizer split
    " modulo 10" into " modul", "o", " ", ...: the model then read text unlike anything it was trained on."""
    from segkit.models import load_model

    texts = [P.PROMPT_SUFFIX, P.ANSWER_TEMPLATE] + [r["question"] + r["solution"] for r in records]
    trained = build_tokenizer(texts)
    build_model(trained, path=tmp_path)
    _, loaded = load_model(str(tmp_path), device="cpu", dtype="float32")
    for r in records[:5]:
        text = P.format_prompt(trained, r["question"]) + r["solution"]
        ids = [t(text, add_special_tokens=False)["input_ids"] for t in (loaded, trained)]
        assert ids[0] == ids[1]
    assert loaded.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == \
        trained.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)


def test_tiny_model_is_about_a_million_parameters(tok):
    n = sum(p.numel() for p in build_model(tok).parameters())
    assert 0.5e6 < n < 1.5e6
