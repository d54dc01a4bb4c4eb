"""tools.cpubench: the in-process cluster answers its whole load and reports a cost per request."""

import gc
import pathlib

import pytest
import trio

from dynamo import gc_policy
from tools import cpubench
from tools.cpubench import main, measure


@pytest.mark.parametrize("op,policy", [("get", None), ("put", gc_policy)])
def test_a_short_run_counts_every_answered_request_and_reports_its_cost(op, policy, tmp_path, monkeypatch):
    answered, started = [0], []
    real_exchange = cpubench._exchange

    async def counting(sock, request):
        await real_exchange(sock, request)
        answered[0] += 1

    async def start():  # the start line: the preload is done, the measured load begins
        answered[0] = 0
        started.append(True)
    monkeypatch.setattr(cpubench, "_exchange", counting)
    thresholds = gc.get_threshold()
    try:
        result = trio.run(measure, op, 0.5, 3, 20, tmp_path, policy, start)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert started and result["op"] == op and result["requests"] == answered[0] > 0
    assert result["per_s"] > 0 and result["cpu_us"] > 0 and result["gc_us"] >= 0
    assert result["gc"] == ("node policy" if policy else "python defaults")
    assert pathlib.Path(result["code"]) == pathlib.Path(__file__).resolve().parents[2]


def test_an_unknown_operation_is_refused():
    with pytest.raises(SystemExit):
        main(["--ops", "scan"])
