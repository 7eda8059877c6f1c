"""The planted-role testbed: deterministic, aligned with the segmenter, split cleanly, answers right."""
import re

import pytest

from segkit import cli
from segkit.records import load
from segkit.segment import segment
from segkit.synth import OPS, REDUNDANT, ROLES, USEFUL, SynthConfig, in_split, make_records, run_synth


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


@pytest.mark.parametrize("knobs", [{}, {"order": "shuffled", "distractors": 0, "chain_length": 1},
                                   {"chain_length": 8, "distractors": 4, "modulus": 97, "redundant": 4.0,
                                    "correction_rate": 0.5},
                                   {"style": "concise", "correction_rate": 0.5},
                                   {"restate_answer": False, "redundant": 3.0},
                                   {"restate_answer": 0.5, "style": "concise"}])
def test_roles_line_up_with_segments(knobs):
    for seed in range(15):
        for rec in make_records(SynthConfig(out="", n=20, seed=seed, **knobs)):
            sol, roles = rec["solution"], rec["segment_roles"]
            for keywords in ("paper", "retro"):
                segs = segment(sol, keywords)
                assert len(segs) == len(roles), (keywords, sol)
            assert segs[0].strip() and "".join(segs) == sol
            assert roles[0] == "core" and roles[-1] == "final" and "final" not in roles[:-1]
            assert set(roles) <= set(ROLES)


def test_answers_are_right_and_stated_in_the_final_segment():
    for rec in make_records(SynthConfig(out="", n=200, seed=1)):
        assert isinstance(rec["answer"], str) and int(rec["answer"]) == solve(rec["question"])
        final = segment(rec["solution"])[-1]
        assert f"\\boxed{{{rec['answer']}}}" in final
        assert re.findall(r"\\boxed\{(\d+)\}", rec["solution"]) == [rec["answer"]]


def test_every_role_appears_and_most_segments_are_redundant():
    roles = [r for rec in make_records(SynthConfig(out="", n=300)) for r in rec["segment_roles"]]
    assert set(roles) == set(ROLES)
    assert sum(r in ("core", "correction", "final") for r in roles) / len(roles) < 0.5  # the rest is redundant



def test_useful_segments_are_exactly_those_that_derive_a_needed_value():
    for rec in make_records(SynthConfig(out="", n=200, seed=7, correction_rate=0.3)):
        needed = set(re.findall(r"Step \d+: (\w) =", rec["question"]))
        for seg, role in zip(segment(rec["solution"]), rec["segment_roles"]):
            derives = bool(set(re.findall(r", so (\w) = ", seg)) & needed)
            assert derives == (role in USEFUL), (role, seg)


def test_correction_states_a_wrong_value_then_the_right_one():
    for rec in make_records(SynthConfig(out="", n=100, correction_rate=1.0)):
        for seg, role in zip(segment(rec["solution"]), rec["segment_roles"]):
            if role == "correction":
                wrong, right, fixed = re.search(r"so \w = (\d+)\. No, .* = (\d+), so \w = (\d+)\.", seg).groups()
                assert wrong != right == fixed


def test_train_and_test_problems_are_disjoint(tmp_path):
    run_synth(SynthConfig(out=str(tmp_path / "train.jsonl"), n=400, chain_length=2, distractors=0))
    run_synth(SynthConfig(out=str(tmp_path / "test.jsonl"), n=100, chain_length=2, distractors=0, split="test"))
    train = {r["question"] for r in load(tmp_path / "train.jsonl")}
    test = {r["question"] for r in load(tmp_path / "test.jsonl")}
    assert len(train) == 400 and len(test) == 100 and not train & test
    assert all(in_split(q, "test", 0.1) for q in test) and not any(in_split(q, "test", 0.1) for q in train)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert cli.main(["synth", "--out", str(out), "--n", "5", "--split", "test", "--chain-length", "3",
                     "--style", "concise", "--restate-answer", "0"]) == 0
    recs = load(out)
    assert len(recs) == 5 and "wrote 5 test problems" in capsys.readouterr().out
    assert all(r["segment_roles"] == ["core"] * 3 + ["final"] or "correction" in r["segment_roles"] for r in recs)
    assert not any("boxed" in r["solution"] for r in recs)
    assert cli.main(["synth", "--out", str(out), "--mix", "verify=x"]) == 2
    assert cli.main(["synth", "--out", str(out), "--restate-answer", "1.5"]) == 2


def test_concise_traces_are_the_useful_path_of_the_same_kind_of_problem():
    long = make_records(SynthConfig(out="", n=300, seed=2))
    concise = make_records(SynthConfig(out="", n=300, seed=2, style="concise"))
    for rec in concise:
        roles = rec["segment_roles"]
        # one segment per step of the chain (core or a corrected one), then the final one; nothing redundant
        assert len(roles) == 2 + 1 and roles[-1] == "final" and set(roles[:-1]) <= {"core", "correction"}
        assert int(rec["answer"]) == solve(rec["question"])
    assert any(r in REDUNDANT for rec in long for r in rec["segment_roles"])
    words = lambda recs: sum(len(r["solution"].split()) for r in recs) / len(recs)  # noqa: E731
    assert words(concise) < 0.7 * words(long)


def test_without_restating_the_answer_the_value_is_only_in_the_steps():
    for rec in make_records(SynthConfig(out="", n=200, seed=5, restate_answer=False)):
        segs = segment(rec["solution"])
        target = re.search(r"what is (\w)\?", rec["question"]).group(1)
        assert "boxed" not in rec["solution"] and not re.search(r"\d", segs[-1])  # no number in the final segment
        assert segs[-1].startswith("\n\nGoing back,") and target in segs[-1]
        # the last step that computes the target states its value (the answer is read off the steps)
        last = [s for s, role in zip(segs, rec["segment_roles"]) if role in ("core", "correction")][-1]
        assert last.rstrip().endswith(f"so {target} = {rec['answer']}.")


def test_a_share_of_restated_answers_mixes_both_endings_and_keeps_the_problems():
    every = make_records(SynthConfig(out="", n=300, seed=7, style="concise"))
    none = make_records(SynthConfig(out="", n=300, seed=7, style="concise", restate_answer=False))
    half = make_records(SynthConfig(out="", n=300, seed=7, style="concise", restate_answer=0.5))
    # the all-or-none files draw nothing for the ending: the same problems and steps, only the final segment differs
    assert [r["question"] for r in every] == [r["question"] for r in none]
    assert all(segment(a["solution"])[:-1] == segment(b["solution"])[:-1] for a, b in zip(every, none))
    restated = ["boxed" in r["solution"] for r in half]
    assert 0.4 < sum(restated) / len(half) < 0.6
    for rec, boxed in zip(half, restated):  # either ending, with its value only where it restates
        final = segment(rec["solution"])[-1]
        assert (f"\\boxed{{{rec['answer']}}}" in final) == boxed and bool(re.search(r"\d", final)) == boxed
