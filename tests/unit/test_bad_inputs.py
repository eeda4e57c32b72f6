"""Bad configs, tables and keys stop each role's real entry point with exit code 2 and one line naming what is wrong.

One valid run (story 1, tiny) is built per module. Each case copies the role's directory, breaks one thing in its
config, a table or a key file, and runs `python -m <role> --config ...` as a subprocess (all cases at once, in
parallel). Each must exit with code 2, print one error line without a traceback that names the file and the key,
column or row at fault, and write nothing to its work directory but its log file. None of them starts a peer.
"""

from __future__ import annotations

import pytest

from tests.support.bad_inputs import CASES, Case, Result, check_stopped, run_cases


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    return run_cases(tmp_path_factory.mktemp("bad_inputs"), CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_stops_the_role_naming_it(results: dict[str, Result], case: Case) -> None:
    check_stopped(results[case.name], case)

