"""Pieces of the measuring harness: drift statistics and the device fingerprint."""
import numpy as np
import pytest

from edgeseg.benchmark.drift import bootstrap_mean_ci, structure_changes
from edgeseg.benchmark.fingerprint import device_fingerprint


def test_bootstrap_interval():
    const = bootstrap_mean_ci([0.01] * 20)
    assert const["mean"] == pytest.approx(0.01) and const["low"] == pytest.approx(0.01) == const["high"]
    values = np.random.default_rng(1).normal(-0.002, 0.01, 200)
    ci = bootstrap_mean_ci(values)
    assert ci["low"] < values.mean() < ci["high"] and ci["high"] - ci["low"] < 0.01
    assert bootstrap_mean_ci(values) == ci  # seeded: reproducible
    assert bootstrap_mean_ci([np.nan, np.inf])["n"] == 0


def test_structure_changes_flags_vanished_and_appeared():
    ref = np.zeros((4, 4), int)
    ref[0, 0] = 2  # a one-pixel lesion
    art = np.zeros((4, 4), int)
    art[3, 3] = 1
    changes = structure_changes(ref, art, ["background", "organ", "lesion"])
    assert {(c["label"], c["change"]) for c in changes} == {("organ", "appeared"), ("lesion", "vanished")}
    assert structure_changes(ref, ref, ["background", "organ", "lesion"]) == []


def test_device_fingerprint_names_cpu_and_versions():
    fp = device_fingerprint(threads=2)
    assert fp["cpu"]["logical_cores"] >= 1 and fp["cpu"]["arch"]
    assert fp["threads"] == 2 and fp["ram_gib"] > 0 and fp["versions"]["numpy"]
    assert "jetson" in fp and "gpu" in fp
