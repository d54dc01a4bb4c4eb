"""The phi accrual detector: phi grows with silence, bootstrapping, the bounded window, the age estimate."""

import math

import pytest
from hypothesis import given, strategies as st

from gossip.detector import DetectorConfig, PhiAccrualDetector, phi_of, z_for_phi


def steady(detector, node="b", beats=50, every_s=1.0, lag_s=0.0, start_s=0.0):
    """Feed `beats` heartbeats produced every `every_s` by the peer's clock, arriving `lag_s` later."""
    for i in range(beats):
        detector.observe(node, start_s + i * every_s, start_s + i * every_s + lag_s)
    return start_s + (beats - 1) * every_s + lag_s  # the time of the last arrival


def test_phi_grows_with_silence():
    detector = PhiAccrualDetector()
    last_s = steady(detector)
    phis = [detector.phi("b", last_s + dt) for dt in (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0)]
    assert phis == sorted(phis)
    assert phis[0] < 1.0 < phis[-1]
    assert phis[-1] > 8.0


@given(st.lists(st.floats(0.05, 5.0), min_size=1, max_size=40), st.floats(0.0, 30.0), st.floats(0.0, 30.0))
def test_phi_is_monotone_in_silence_for_any_history(intervals, a_s, b_s):
    detector = PhiAccrualDetector()
    clock_s = 0.0
    detector.observe("b", clock_s, clock_s)
    for interval_s in intervals:
        clock_s += interval_s
        detector.observe("b", clock_s, clock_s)
    early, late = sorted((a_s, b_s))
    assert detector.phi("b", clock_s + early) <= detector.phi("b", clock_s + late)


def test_suspected_exactly_when_phi_crosses_threshold():
    detector = PhiAccrualDetector()
    last_s = steady(detector)
    suspects, next_s = detector.check(last_s)
    assert suspects == [] and next_s > last_s
    assert detector.phi("b", next_s - 1e-6) <= 8.0 + 1e-6
    assert detector.phi("b", next_s + 1e-3) > 8.0
    assert detector.check(next_s + 1e-3)[0] == ["b"]
    assert detector.suspected("b", next_s + 1e-3) and not detector.suspected("b", next_s - 1e-3)


def test_z_for_phi_inverts_phi():
    for threshold in (1.0, 3.0, 8.0, 12.0, 16.0):
        assert phi_of(z_for_phi(threshold), 0.0, 1.0) == pytest.approx(threshold, rel=1e-6)


def test_bootstrap_does_not_convict_a_new_peer_at_once_but_does_eventually():
    detector = PhiAccrualDetector()
    detector.reset("b", beat_s=0.0, now=100.0)
    assert detector.check(103.0)[0] == []            # three silent intervals: still trusted
    assert detector.phi("b", 100.0) < 1.0
    assert detector.check(130.0)[0] == ["b"]          # but a peer that never beats again is convicted


def test_bootstrap_scale_widens_the_first_guess():
    narrow, wide = PhiAccrualDetector(), PhiAccrualDetector()
    narrow.reset("b", 0.0, 0.0)
    wide.reset("b", 0.0, 0.0, scale=3.0)
    assert wide.check(0.0)[1] > narrow.check(0.0)[1]


def test_real_samples_replace_the_bootstrap_guess():
    detector = PhiAccrualDetector(DetectorConfig(window_size=20))
    detector.reset("b", 0.0, 0.0)
    first_deadline_s = detector.check(0.0)[1]
    last_s = steady(detector, beats=100)
    span_s = detector.check(last_s)[1] - last_s
    assert span_s < first_deadline_s  # a regular peer is trusted less blindly than a new one
    assert len(detector._windows["b"].samples) == 20


def test_window_is_bounded_and_forgets_the_oldest():
    config = DetectorConfig(window_size=5)
    detector = PhiAccrualDetector(config)
    steady(detector, beats=20, every_s=3.0)
    last_s = steady(detector, beats=5, every_s=1.0, start_s=60.0)  # (the gap before is dropped: > max)
    window = detector._windows["b"]
    assert len(window.samples) == 5
    assert list(window.samples)[-4:] == pytest.approx([1.0] * 4)
    assert detector.age("b", last_s) == pytest.approx(0.0)


def test_intervals_longer_than_max_are_not_recorded():
    detector = PhiAccrualDetector(DetectorConfig(max_interval_s=5.0))
    last_s = steady(detector, beats=30)
    before = list(detector._windows["b"].samples)
    detector.observe("b", last_s + 60.0, last_s + 60.0)   # back after a partition
    assert list(detector._windows["b"].samples) == before
    assert not detector.suspected("b", last_s + 61.0)      # and trusted again from its fresh beat


def test_relayed_old_beat_does_not_restart_the_silence_clock():
    """A beat produced before a crash that arrives late (second hand) is seen as old, not fresh."""
    detector = PhiAccrualDetector()
    last_s = steady(detector, beats=30)                   # direct: lag 0, the clock offset is learned
    detector.observe("b", 29.5, last_s + 3.0)             # beat from 29.5 s, arriving at 32 s
    assert detector.age("b", last_s + 3.0) == pytest.approx(2.5, abs=0.01)   # (offset creep: 1 ms/s)
    span_s = detector._windows["b"].span_s
    assert detector.check(last_s + 3.0)[1] == pytest.approx(29.5 + span_s, abs=0.01)  # not 32 + span


def test_age_is_never_overestimated_by_lagged_arrivals():
    detector = PhiAccrualDetector()
    steady(detector, beats=10, lag_s=2.0)                 # every beat arrives 2 s late
    detector.observe("b", 9.5, 11.5)
    assert detector.age("b", 11.5) <= 2.0 + 1e-9           # never more than the true age
    assert detector.age("b", 11.5) >= 0.0


def test_fresh_requires_a_young_beat():
    detector = PhiAccrualDetector()
    last_s = steady(detector)
    deadline_s = detector.check(last_s)[1]
    detector.observe("b", 49.0 + (deadline_s - last_s) * 0.9, deadline_s + 5.0)  # a newer but old beat
    assert not detector.fresh("b", deadline_s + 5.0)
    detector.observe("b", deadline_s + 5.0 - last_s + 49.0, deadline_s + 5.0)      # produced just now
    assert detector.fresh("b", deadline_s + 5.0)


def test_stale_lists_oldest_first_and_respects_the_limits():
    detector = PhiAccrualDetector()
    for node, beat_s in (("a", 8.0), ("b", 5.0), ("c", 9.9), ("d", 6.0)):
        detector.reset(node, beat_s, beat_s)
    assert detector.stale(["a", "b", "c", "d"], 10.0, 1.5, 2) == ["b", "d"]
    assert detector.stale(["a", "b", "c", "d"], 10.0, 1.5, 5) == ["b", "d", "a"]
    assert detector.stale(["c"], 10.0, 1.5, 5) == []


def test_forget_and_tracks():
    detector = PhiAccrualDetector()
    detector.observe("b", 0.0, 0.0)
    assert detector.tracks("b")
    detector.forget("b")
    assert not detector.tracks("b") and detector.check(100.0) == ([], math.inf)


@pytest.mark.parametrize("bad", [dict(threshold=0), dict(window_size=1), dict(min_std_s=0),
                                 dict(acceptable_pause_s=-1), dict(creep=-0.1)])
def test_config_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        DetectorConfig(**bad)
