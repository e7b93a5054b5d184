"""The fuzzer at its small size: hypothesis mutates every shipped space and example
experiment (keys deleted or added, values of the wrong type, empty or duplicated
lists, numbers negated or zeroed, YAML text damaged) and loads each document through
the real loaders. Every document must be accepted (and then usable: the space's
count, MACs and params work) or rejected with a one-line UserError naming the file;
no other exception. ``nasplat bench fuzz`` runs the 10 000-document version."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.fuzz import check_one, run  # noqa: E402


def test_fuzz_loaders_small(tmp_path):
    tally = run(250, seed=0, folder=tmp_path)
    assert tally.documents == 250
    uncaught = {k: v for k, v in tally.counts.items() if k.endswith("uncaught")}
    assert not uncaught, "\n\n".join(tally.uncaught[:3])
    assert not tally.bad_lines, tally.bad_lines[:3]
    # the generator exercises both outcomes of both loaders
    for key in ("space accepted", "space rejected", "experiment accepted", "experiment rejected"):
        assert tally.counts[key] > 0, tally.counts


def test_check_one_counts_a_crash_as_uncaught(tmp_path):
    """The tally is not vacuous: a loader crash is recorded as uncaught."""
    from bench.fuzz import Tally

    tally = Tally()
    p = tmp_path / "doc.yaml"
    p.write_text("family: mbv3\nname: x\nresolutions: [12]\nstages: []\n")
    check_one("space", p, tally)
    assert tally.counts["space rejected"] == 1 and not tally.uncaught
    import nasplat.space as S

    orig = S.load_space
    try:
        def boom(path):
            raise ZeroDivisionError("x")

        S.load_space = boom
        check_one("space", p, tally)
    finally:
        S.load_space = orig
    assert tally.counts["space uncaught"] == 1 and "ZeroDivisionError" in tally.uncaught[0]
