"""tools.cpubench: the in-process cluster answers its whole load and reports a cost per request."""

import pathlib

import pytest
import trio

from tools.cpubench import main, measure


@pytest.mark.parametrize("op", ["get", "put"])
def test_a_small_run_answers_every_request_and_reports_its_cost(op, tmp_path):
    result = trio.run(measure, op, 30, 3, 20, tmp_path)
    assert result["op"] == op and result["requests"] == 30
    assert result["per_s"] > 0 and result["cpu_us"] > 0
    assert pathlib.Path(result["code"]) == pathlib.Path(__file__).resolve().parents[2]


def test_an_unknown_operation_is_refused():
    with pytest.raises(SystemExit):
        main(["--ops", "scan"])
