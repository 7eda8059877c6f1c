"""The planted-role testbed: deterministic, aligned with the segmenter, split cleanly, answers right; the functional
style's roles follow what the answer reads, and its surface does not give them away."""
import re

import pytest

from segkit import cli
from segkit.records import load
from segkit.score import ALWAYS_KEEP
from segkit.segment import segment
from segkit.synth import OPS, REDUNDANT, ROLES, USEFUL, SynthConfig, in_split, make_records, run_synth
from segkit.synth_functional import DERIVATION, answer_reached, changes_answer
from segkit.analysis.controls import surface_summary


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


# the functional testbed: roles that only function reveals (segkit.synth_functional)
FUNCTIONAL_KNOBS = [{}, {"chain_length": 4, "distractors": 2, "modulus": 7, "redundant": 3.0},
                    {"order": "shuffled", "chain_length": 1, "restate_answer": 0},
                    {"chain_length": 3, "ops": "*", "mix": "verify=3,repeat=1,truncated=0,distractor=1"},
                    {"style": "concise", "chain_length": 3}]


@pytest.mark.parametrize("knobs", FUNCTIONAL_KNOBS)
def test_functional_roles_line_up_with_segments_and_reach_the_answer(knobs):
    for seed in range(4):
        for rec in make_records(SynthConfig(out="", n=25, seed=seed, roles="functional", **knobs)):
            sol, roles = rec["solution"], rec["segment_roles"]
            for keywords in ("paper", "retro"):
                assert len(segment(sol, keywords)) == len(roles), (keywords, sol)
            assert "".join(segment(sol)) == sol and roles[-1] == "final" and "final" not in roles[:-1]
            assert set(roles) <= set(ROLES) - {"correction"}
            assert int(rec["answer"]) == solve(rec["question"]) == answer_reached(rec)


@pytest.mark.parametrize("knobs", FUNCTIONAL_KNOBS)
def test_functional_useful_means_the_answer_changes_with_the_segment(knobs):
    roles = []
    for rec in make_records(SynthConfig(out="", n=60, seed=11, roles="functional", **knobs)):
        for i, role in enumerate(rec["segment_roles"][:-1]):
            assert changes_answer(rec, i) == (role in USEFUL), (role, i, rec["solution"])
            roles.append(role)
    if knobs.get("style") != "concise":
        assert {"core", "verify", "repeat", "distractor"} <= set(roles)


def test_changes_answer_on_a_trace_written_by_hand():
    rec = {"question": "Let b = 2. Let c = 3. Step 1: d = b + c. Step 2: f = d * 4. Let g = c + 1. "
                       "Working modulo 10, what is f?",
           "solution": "Wait, d = b + c = 2 + 3, so d = 5"            # 0: overwritten by 2 before f reads d
                       "\n\nWait, g = c + 1 = 3 + 1, so g = 4"          # 1: f does not need g
                       "\n\nBut wait, d = b + c = 2 + 3, so d = 5"      # 2: the d that f reads
                       "\n\nHowever, f = d * 4 = 5 * 4, so f = ?"        # 3: stops before its value
                       "\n\nAlternatively, f = d * 4 = 5 * 4, so f = 0"  # 4: the answer
                       "\n\nWait, d = b + c = 2 + 3, so d = 5"          # 5: after the last read of d
                       "\n\nGoing back, f = 0. So, the final answer is \\boxed{0}."}
    assert answer_reached(rec) == 0 and answer_reached(rec, corrupt=2) == 4  # d = 6: 24 mod 10
    assert [changes_answer(rec, i) for i in range(6)] == [False, False, True, False, True, False]
    with pytest.raises(ValueError, match="segment 4 states f = 7, its operands give 0"):  # a trace must add up
        answer_reached({**rec, "solution": rec["solution"].replace("so f = 0", "so f = 7")})


def test_functional_verify_and_repeat_are_the_same_text_of_the_same_value():
    recs = make_records(SynthConfig(out="", n=200, seed=3, roles="functional"))
    bodies = {role: {DERIVATION.search(s).group(0) for rec in recs  # the segment without its opener
                     for s, r in zip(segment(rec["solution"]), rec["segment_roles"]) if r == role}
              for role in ("verify", "repeat", "core")}
    assert bodies["verify"] & bodies["repeat"] and bodies["core"] & bodies["repeat"]


@pytest.mark.parametrize("roles", ["functional", "worded"])
def test_length_and_position_alone_do_not_separate_the_functional_roles(roles):
    # fails where the surface gives the roles away: on the worded testbed, length alone ranks useful segments first
    records = make_records(SynthConfig(out="", n=300, seed=5, roles=roles))
    summary = surface_summary(records)
    if roles == "functional":
        # every segment but the final one, and those auc_table scores (the always-kept ones left out)
        for s in (summary, surface_summary(records, always_keep=ALWAYS_KEEP)):
            assert 0.4 <= s["auc"]["length_words"] <= 0.6 and 0.4 <= s["auc"]["position"] <= 0.6, s
        assert max(summary["mean_words"].values()) - min(summary["mean_words"].values()) < 0.5
    else:
        assert summary["auc"]["length_words"] > 0.9


def test_functional_concise_is_the_useful_path_and_the_command_line_takes_it(tmp_path):
    out = tmp_path / "f.jsonl"
    assert cli.main(["synth", "--out", str(out), "--n", "30", "--roles", "functional", "--style", "concise",
                     "--chain-length", "3"]) == 0
    assert all(r["segment_roles"] == ["core"] * 3 + ["final"] for r in load(out))
    long = make_records(SynthConfig(out="", n=30, roles="functional", chain_length=3))
    assert sum(len(r["segment_roles"]) for r in long) > 1.5 * 4 * 30
    with pytest.raises(SystemExit):  # argparse refuses a design it does not know
        cli.main(["synth", "--out", str(out), "--roles", "planted"])
