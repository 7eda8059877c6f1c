"""The planted-role testbed: deterministic, aligned with the segmenter, split cleanly, answers right."""
import re

import pytest

from segkit import cli
from segkit.records import load
from segkit.segment import segment
from segkit.synth import OPS, ROLES, USEFUL, SynthConfig, generate, in_split, run_synth


def solve(question: str) -> int:
    """Recompute the answer from the question text alone."""
    defs = dict(re.findall(r"(?:Let|Step \d+:) (\w) = ([^.]+)\.", question))
    m, target = re.search(r"modulo (\d+), what is (\w)\?", question).groups()
    m = int(m)

    def value(tok):
        if tok.isdigit():
            return int(tok)
        parts = defs[tok].split()
        return int(parts[0]) if len(parts) == 1 else OPS[parts[1]](value(parts[0]), value(parts[2]), m)

    return value(target)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    run_synth(SynthConfig(out=str(a), n=40, seed=3))
    run_synth(SynthConfig(out=str(b), n=40, seed=3))
    run_synth(SynthConfig(out=str(c), n=40, seed=4))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("knobs", [{}, {"order": "shuffled", "distractors": 0, "steps": 1},
                                   {"steps": 8, "distractors": 4, "modulus": 97, "redundant": 4.0,
                                    "correction_rate": 0.5}])
def test_roles_line_up_with_segments(knobs):
    for seed in range(15):
        for rec in generate(SynthConfig(out="", n=20, seed=seed, **knobs)):
            sol, roles = rec["solution"], rec["segment_roles"]
            for keywords in ("paper", "retro"):
                segs = segment(sol, keywords)
                assert len(segs) == len(roles), (keywords, sol)
            assert segs[0].strip() and "".join(segs) == sol
            assert roles[0] == "core" and roles[-1] == "final" and "final" not in roles[:-1]
            assert set(roles) <= set(ROLES)


def test_answers_are_right_and_stated_in_the_final_segment():
    for rec in generate(SynthConfig(out="", n=200, seed=1)):
        assert isinstance(rec["answer"], str) and int(rec["answer"]) == solve(rec["question"])
        final = segment(rec["solution"])[-1]
        assert f"\\boxed{{{rec['answer']}}}" in final
        assert re.findall(r"\\boxed\{(\d+)\}", rec["solution"]) == [rec["answer"]]


def test_every_role_appears_and_most_segments_are_redundant():
    roles = [r for rec in generate(SynthConfig(out="", n=300)) for r in rec["segment_roles"]]
    assert set(roles) == set(ROLES)
    assert sum(r in ("core", "correction", "final") for r in roles) / len(roles) < 0.5  # the rest is redundant
    assert all(r in USEFUL for r in ("core", "verify", "correction"))


def test_correction_states_a_wrong_value_then_the_right_one():
    for rec in generate(SynthConfig(out="", n=100, correction_rate=1.0)):
        for seg, role in zip(segment(rec["solution"]), rec["segment_roles"]):
            if role == "correction":
                wrong, right, fixed = re.search(r"so \w = (\d+)\. No, .* = (\d+), so \w = (\d+)\.", seg).groups()
                assert wrong != right == fixed


def test_train_and_test_problems_are_disjoint(tmp_path):
    run_synth(SynthConfig(out=str(tmp_path / "train.jsonl"), n=400, steps=2, distractors=0))
    run_synth(SynthConfig(out=str(tmp_path / "test.jsonl"), n=100, steps=2, distractors=0, split="test"))
    train = {r["question"] for r in load(tmp_path / "train.jsonl")}
    test = {r["question"] for r in load(tmp_path / "test.jsonl")}
    assert len(train) == 400 and len(test) == 100 and not train & test
    assert all(in_split(q, "test", 0.1) for q in test) and not any(in_split(q, "test", 0.1) for q in train)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert cli.main(["synth", "--out", str(out), "--n", "5", "--split", "test", "--steps", "3"]) == 0
    assert len(load(out)) == 5 and "wrote 5 test problems" in capsys.readouterr().out
    assert cli.main(["synth", "--out", str(out), "--mix", "verify=x"]) == 2
