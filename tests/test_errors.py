"""The user errors' messages (masktopo.errors)."""

from masktopo.errors import UnknownNameError, one_line


def test_unknown_name_lists_the_known_ones_after_the_closest():
    e = UnknownNameError("metric", "rmanujan_gap", ["mu0", "ramanujan_gap", "density"])
    assert str(e) == (
        "unknown metric 'rmanujan_gap' (did you mean 'ramanujan_gap'?); "
        "known: density, mu0, ramanujan_gap"
    )
    assert e.known == ["density", "mu0", "ramanujan_gap"] and e.name == "rmanujan_gap"
    far = UnknownNameError("PaI method", "nope", ["er", "erk", "snip"])
    assert str(far) == "unknown PaI method 'nope'; known: er, erk, snip"  # nothing close: no hint


def test_one_line_quotes_the_first_sentence_or_the_whole_message():
    e = RuntimeError("boom. And more\nsecond line")
    assert one_line(e) == "RuntimeError: boom"
    assert one_line(e, whole=True) == "RuntimeError: boom. And more second line"
    assert one_line(ValueError()) == one_line(ValueError(), whole=True) == "ValueError"
    long = one_line(OSError("x" * 500), whole=True)
    assert len(long) == len("OSError: ") + 200 and long.endswith("...")
