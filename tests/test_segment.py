import random
import re

import pytest

from segkit.segment import KEYWORDS, char_spans, segment, token_spans


def reference_split(text, keywords):
    """The reference behaviour: re.split on the alternation, keyword + following text form one segment."""
    parts = re.split("(" + "|".join(map(re.escape, keywords)) + ")", text)
    return [parts[0]] + [parts[i] + parts[i + 1] for i in range(1, len(parts), 2)]


@pytest.mark.parametrize("text,expected", [
    ("no keyword at all", ["no keyword at all"]),
    ("\n\nWait, start with it.", ["", "\n\nWait, start with it."]),
    ("a\n\nWait\n\nWait b", ["a", "\n\nWait", "\n\nWait b"]),
    ("x\n\nBut wait, y\n\nHowever z", ["x", "\n\nBut wait, y", "\n\nHowever z"]),
    ("ünï 😀 café\n\nAlternatively, π ≈ 3.14", ["ünï 😀 café", "\n\nAlternatively, π ≈ 3.14"]),
    ("Wait without blank line\nWait", ["Wait without blank line\nWait"]),
    ("", [""]),
])
def test_boundaries(text, expected):
    assert segment(text) == expected
    assert "".join(segment(text)) == text


def test_matches_reference_split_on_random_traces():
    rng = random.Random(0)
    pieces = list(KEYWORDS["paper"]) + list(KEYWORDS["retro"]) + ["\n\n", "\n", " Wait", "But", "é", "x = 1.", "\n\nWai"]
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for name in ("paper", "retro"):
            segs = segment(text, name)
            assert "".join(segs) == text
            assert segs == reference_split(text, KEYWORDS[name])


def test_named_and_custom_keywords():
    text = "a\n\nHmm, b\n\nWait c"
    assert segment(text, "paper") == ["a\n\nHmm, b", "\n\nWait c"]
    assert segment(text, "retro") == ["a", "\n\nHmm, b", "\n\nWait c"]
    assert segment(text, ["\\n\\nHmm"]) == ["a", "\n\nHmm, b\n\nWait c"]  # escapes from the command line decoded
    with pytest.raises(ValueError):
        segment(text, "nope")


def test_token_spans_follow_the_text_as_tokenized(smol_tokenizer):
    segs = segment("Let x = 12.\n\nWait, x=12 or 21?\n\nAlternatively: ünïcode 😀 x=21.\n\nAnother try")
    text = "".join(segs)
    enc = smol_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = token_spans(enc["offset_mapping"], char_spans(segs))
    assert spans[0][0] == 0 and spans[-1][1] == len(enc["input_ids"])
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, no token counted twice
    for seg, (s, e) in zip(segs, spans):
        # every segment's tokens decode to exactly that segment (SmolLM2's boundaries fall at "\n\n")
        assert smol_tokenizer.decode(enc["input_ids"][s:e]) == seg


def test_straddling_token_belongs_where_it_starts():
    # segments "ab" | "cd"; token 1 spans "bc" (starts in segment 0)
    spans = token_spans([(0, 1), (1, 3), (3, 4)], char_spans(["ab", "cd"]))
    assert spans == [(0, 2), (2, 3)]
    # an empty first segment gets no token
    assert token_spans([(0, 2), (2, 4)], char_spans(["", "ab", "cd"])) == [(0, 0), (0, 1), (1, 2)]


def test_windows_line_breaks_split_where_unix_ones_do():
    """A keyword's "\n" also matches "\r\n": the same segments, the text unchanged, "".join still the trace."""
    assert segment("a=1.\r\n\r\nWait, a=1 indeed.") == ["a=1.", "\r\n\r\nWait, a=1 indeed."]
    assert segment("a\r\n\r\nBut wait b\n\nHmm c", "retro") == ["a", "\r\n\r\nBut wait b", "\n\nHmm c"]
    rng = random.Random(1)
    pieces = list(KEYWORDS["retro"]) + ["\n\n", "\n", " Wait", "x = 1.", "\n\nWai", "é"]
    for _ in range(300):
        unix = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        windows = unix.replace("\n", "\r\n")
        segs = segment(windows, "retro")
        assert "".join(segs) == windows
        assert [s.replace("\r\n", "\n") for s in segs] == segment(unix, "retro")
    # a lone "\r" is not a line break: no split
    assert segment("a\r\rWait b") == ["a\r\rWait b"]
