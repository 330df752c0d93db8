"""The user errors' messages (masktopo.errors)."""

from masktopo.errors import UnknownNameError


def test_unknown_name_lists_the_known_ones_after_the_closest():
    e = UnknownNameError("metric", "rmanujan_gap", ["mu0", "ramanujan_gap", "density"])
    assert str(e) == (
        "unknown metric 'rmanujan_gap' (did you mean 'ramanujan_gap'?); "
        "known: density, mu0, ramanujan_gap"
    )
    assert e.known == ["density", "mu0", "ramanujan_gap"] and e.name == "rmanujan_gap"
    far = UnknownNameError("PaI method", "nope", ["er", "erk", "snip"])
    assert str(far) == "unknown PaI method 'nope'; known: er, erk, snip"  # nothing close: no hint
