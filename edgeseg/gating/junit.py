"""The gate's checks as a JUnit XML report (one testcase per check, failures with their numbers), which CI
systems render as test results."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from edgeseg.data.io import atomic_write


def _suite(root: ET.Element, name: str, report: dict) -> int:
    """One ``<testsuite>`` of ``report``'s checks under ``root``; returns its failures."""
    checks = report["checks"]
    failures = sum(not c.passed for c in checks)
    tests = ET.SubElement(root, "testsuite", name=name, tests=str(len(checks)), failures=str(failures), errors="0",
                          skipped="0", time="0")
    props = ET.SubElement(tests, "properties")
    for key in ("mode", "metric", "device_class", "runs", "baseline_runs"):
        ET.SubElement(props, "property", name=key, value=str(report.get(key)))
    for c in checks:
        where = "edgeseg.gate" if name == "edgeseg-gate" else f"edgeseg.gate.{name}"  # a fleet: per device class
        case = ET.SubElement(tests, "testcase", classname=f"{where}.{c.artifact}", name=c.check, time="0")
        text = f"{c.artifact} {c.check}: baseline {c.baseline}, current {c.current}, limit {c.limit}: {c.message}"
        if c.advisory:
            text += " (not judged: baseline of another device class)"
        if not c.passed:
            ET.SubElement(case, "failure", message=c.message, type="regression").text = text
        else:
            ET.SubElement(case, "system-out").text = text
    if report["notes"]:
        ET.SubElement(tests, "system-out").text = "\n".join(report["notes"])
    return failures


def junit_xml(reports: list[tuple[str, dict]], errors: dict[str, str] | None = None,
              suite: str = "edgeseg-gate") -> ET.Element:
    """``<testsuites>`` with one ``<testsuite>`` per ``(name, report)``; a failed check is a ``<failure>``, each
    of ``errors`` (name → why nothing was measured, e.g. a fleet node whose bench failed) an ``<error>``."""
    errors = errors or {}
    root = ET.Element("testsuites", name=suite)
    failures = sum(_suite(root, name, report) for name, report in reports)
    for name, why in errors.items():
        tests = ET.SubElement(root, "testsuite", name=name, tests="1", failures="0", errors="1", skipped="0", time="0")
        case = ET.SubElement(tests, "testcase", classname=name, name="bench", time="0")
        ET.SubElement(case, "error", message=why[:500], type="not measured").text = why
    root.set("tests", str(sum(len(r["checks"]) for _, r in reports) + len(errors)))
    root.set("failures", str(failures))
    root.set("errors", str(len(errors)))
    return root


def write_junit(report: dict | list[tuple[str, dict]], path: Path, errors: dict[str, str] | None = None) -> None:
    """The gate's JUnit XML: one report (suite ``edgeseg-gate``) or ``(suite name, report)`` pairs."""
    from edgeseg.overwrite import check_junit_path

    check_junit_path(path)
    reports = [("edgeseg-gate", report)] if isinstance(report, dict) else report
    root = junit_xml(reports, errors)
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))
