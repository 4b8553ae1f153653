"""The curated mutation list (``tests/mutations.py``) stays applicable: every mutated line still exists exactly once
in its file and every test named for it still exists, so ``python tests/mutations.py`` (slow: it runs each
mutation's tests) cannot silently go stale as the code it pins is edited. Running the mutations is not part of this
fast check."""

from __future__ import annotations

import re

import pytest

from mutations import MUTATIONS, REPO, mutate


@pytest.mark.parametrize("name,file,original,mutated,tests", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_curated_mutation_applies_and_names_existing_tests(name, file, original, mutated, tests):
    path = REPO / file
    changed = mutate(path, original, mutated)  # raises SystemExit unless the line is there exactly once
    assert changed != path.read_text()
    compile(changed, str(path), "exec")  # the mutant is still valid Python: its test fails on the rule, not a typo
    for test in tests:
        test_file, _, test_id = test.partition("::")
        function = re.sub(r"\[.*\]$", "", test_id)
        assert re.search(rf"^def {re.escape(function)}\(", (REPO / test_file).read_text(), re.M), test


def test_every_surviving_mutant_disposition_is_a_one_line_reason_of_a_known_kind():
    """``tests/mutation_dispositions.json`` (read by ``tests/mutation_score.py``): keys name a module, line, operator
    and occurrence; each reason is one line saying equivalent, out of scope, or which existing test kills it."""
    import json

    dispositions = json.loads((REPO / "tests" / "mutation_dispositions.json").read_text())
    for key, reason in dispositions.items():
        module, line, operator, occurrence = key.split(":")
        assert (REPO / module).is_file() and line.isdigit() and occurrence.isdigit() and operator, key
        assert "\n" not in reason and reason.startswith(("equivalent: ", "out of scope: ", "killed by tests/")), key
        if reason.startswith("killed by "):
            test_file, _, function = reason.removeprefix("killed by ").split()[0].partition("::")
            function = function.partition("[")[0]  # a parametrized case names its function
            assert re.search(rf"^def {re.escape(function)}\(", (REPO / test_file).read_text(), re.M), key
