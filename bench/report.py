"""Turn benchmark results into `RESULTS.md`: machine, date, settings, tables, ratios, targets."""

from __future__ import annotations

import json
from typing import Any


def _met(flag: bool | None) -> str:
    return "not run" if flag is None else ("**met**" if flag else "**NOT MET**")


def summary(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"   {result['title']}: ERROR {result['error']}"
    lines = [f"   {result['title']} ({result['seconds']:.0f} s)"]
    if result.get("columns"):
        lines.append("   " + " | ".join(result["columns"]))
        lines.extend("   " + " | ".join(row) for row in result["rows"])
    for table in result.get("tables", []):
        lines.append(f"   {table['title'].split(' (', 1)[0]}: " + " | ".join(table["columns"]))
        lines.extend("   " + " | ".join(row) for row in table["rows"])
    for target in result.get("targets", []):
        lines.append(f"   target {target['target']}: {target['value']} -> {_met(target['met']).strip('*')}")
    return "\n".join(lines)


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def markdown(document: dict[str, Any]) -> str:
    machine = document["machine"]
    out = [
        "# Benchmark results",
        "",
        f"Written by `{document['command']}` ({document['mode']} mode) on {document['date']}; the run took "
        f"{document['seconds'] / 60:.1f} minutes. Every figure below comes from that run; ratios compare "
        "against a baseline measured in the same run, on the same broker and sandbox. How to run and what "
        "each benchmark does: [README.md](README.md).",
        "",
        "## Machine",
        "",
        f"- {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory']} memory, Linux {machine['kernel']}",
        f"- Python {machine['python']}; Java: {machine['java']}",
        f"- {machine['packages']}",
        "- Broker, sandbox, consumers and baselines all share this machine. Load average (1, 5, 15 min) "
        f"before the run: {', '.join(f'{v:.1f}' for v in document['load']['before'])}; after: "
        f"{', '.join(f'{v:.1f}' for v in document['load']['after'])}. Before the run, all of it was other work "
        "(e.g. a test suite in another checkout): it slows both sides of every comparison.",
        "",
        "## Code measured",
        "",
        f"Commit `{document['code']['commit']}`; the files the figures depend on (sha256 prefix, and whether "
        "they had uncommitted changes when measured):",
        "",
        *[
            f"- `{name}` {state['sha256']}" + (" (uncommitted changes)" if state["uncommitted"] else "")
            for name, state in document["code"]["files"].items()
        ],
        "",
        "## Targets",
        "",
    ]
    rows = []
    for result in document["results"]:
        if "error" in result:
            rows.append([result["title"], "benchmark failed", result["error"], "**NOT RUN**"])
        for target in result.get("targets", []):
            rows.append([result["title"], target["target"], str(target["value"]), _met(target["met"])])
    out.extend(_table(["benchmark", "target", "measured", "verdict"], rows))
    for result in document["results"]:
        out += ["", f"## {result['title']}", ""]
        if "error" in result:
            out += [f"Failed: `{result['error']}`"]
            continue
        if result.get("skipped"):
            out += [result["skipped"]]
        if result.get("columns"):
            out.extend(_table(result["columns"], result["rows"]))
            out.append("")
        for table in result.get("tables", []):  # further tables of the same run (e.g. calls' repeated calls)
            out += [f"{table['title']}:", ""]
            out.extend(_table(table["columns"], table["rows"]))
            out.append("")
        if result.get("baseline"):
            out += [f"Baseline: {result['baseline']}.", ""]
        for note in result.get("notes", []):
            out.append(f"- {note}")
        out += ["", f"Settings (the benchmark took {result['seconds']:.0f} s):", ""]
        out.extend(
            f"- `{name}`: `{json.dumps(value, default=str, ensure_ascii=False)}`"
            for name, value in result.get("settings", {}).items()
        )
    return "\n".join(out) + "\n"
