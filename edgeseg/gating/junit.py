"""The gate's checks as a JUnit XML report (one testcase per check, failures with their numbers), which CI
systems render as test results."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from edgeseg.data.io import atomic_write


def junit_xml(report: dict, suite: str = "edgeseg-gate") -> ET.Element:
    """``<testsuites>`` with one ``<testsuite>``; a failed check is a ``<failure>``."""
    checks = report["checks"]
    failures = sum(not c.passed for c in checks)
    root = ET.Element("testsuites", name=suite, tests=str(len(checks)), failures=str(failures), errors="0")
    tests = ET.SubElement(root, "testsuite", name=suite, tests=str(len(checks)), failures=str(failures), errors="0",
                          skipped="0", time="0")
    props = ET.SubElement(tests, "properties")
    for key in ("mode", "metric", "device_class", "runs", "baseline_runs"):
        ET.SubElement(props, "property", name=key, value=str(report.get(key)))
    for c in checks:
        case = ET.SubElement(tests, "testcase", classname=f"edgeseg.gate.{c.artifact}", name=c.check, time="0")
        text = f"{c.artifact} {c.check}: baseline {c.baseline}, current {c.current}, limit {c.limit}: {c.message}"
        if c.advisory:
            text += " (not judged: baseline of another device class)"
        if not c.passed:
            ET.SubElement(case, "failure", message=c.message, type="regression").text = text
        else:
            ET.SubElement(case, "system-out").text = text
    if report["notes"]:
        ET.SubElement(tests, "system-out").text = "\n".join(report["notes"])
    return root


def write_junit(report: dict, path: Path) -> None:
    root = junit_xml(report)
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))
