"""The results document's comparison of the search's students with hand-written references.

Beside each retrained search student, `kdsearch train` trains every reference scaled to at most its
parameters (RUN/final/<trial>/references/<name>/). Per size band (a retrained student and the
references of at most its size) the section sets the search's student beside the best reference, and
the aim list says, per band, whether the search's student is at least as accurate: the table that
says whether the search earned its keep.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..analysis.stats import excludes_zero, paired_differences, t_interval
from ..errors import KDSearchError
from ..runs.layout import RESULTS_FILE


def load_references(run_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """The references' results.json with a finished model, by the trial they were trained beside."""
    out: dict[int, list[dict[str, Any]]] = {}
    for path in sorted(Path(run_dir).glob(f"final/*/references/*/{RESULTS_FILE}")):
        try:
            body = json.loads(path.read_text())
        except ValueError as exc:
            raise KDSearchError(f"{path} is not valid JSON ({exc})") from None
        if body.get("summary", {}).get("arms"):
            out.setdefault(body["setup"]["trial"], []).append(body)
    return out


def best_reference(refs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The reference whose distilled arm has the best mean validation accuracy (chosen on validation, as
    every choice in final training is; its test accuracy is what is compared)."""
    distilled = [r for r in refs if "kd" in r["summary"]["arms"]]
    return max(distilled, key=lambda r: r["summary"]["arms"]["kd"]["val_mean"], default=None)


def fraction_of(params: int, teacher_params: int) -> str:
    return f"1/{teacher_params / params:.0f}" if params else ""


def band(b: dict[str, Any], teacher: dict[str, Any]) -> str:
    """A size band named by what it holds: at most the search student's parameters."""
    p = b["trial"]["params"]
    return f"at most {p:,} params ({fraction_of(p, teacher['params'])} of the teacher)"


def accuracy(arm: dict[str, Any]) -> str:
    sd = arm.get("test_sd")
    return f"{100 * arm['test_mean']:.2f}" + (f" ± {100 * sd:.2f}%" if sd == sd and sd is not None else "%")


def difference(search: dict[str, Any], ref: dict[str, Any]) -> tuple[float, str]:
    """Search minus reference, distilled test accuracy in points: the means' difference, and the paired
    interval over the seeds both finished (same seed: same batch order, different network)."""
    a, r = search["summary"]["arms"]["kd"], ref["summary"]["arms"]["kd"]
    diff = 100 * (a["test_mean"] - r["test_mean"])
    pairs = paired_differences({int(k): v for k, v in a["test"].items()}, {int(k): v for k, v in r["test"].items()})
    ci = t_interval(pairs)
    if ci.n < 2:
        return diff, f"{diff:+.2f} ({ci.n} paired seed{'s' if ci.n != 1 else ''})"
    mark = "" if excludes_zero(ci.low, ci.high) else " (spans 0)"
    return diff, f"{diff:+.2f} [{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]{mark}"


def compared(finals: list[dict[str, Any]], refs: dict[int, list[dict[str, Any]]]) -> list[tuple[dict, dict, list]]:
    """(search student, best reference, all its references) for each retrained student with both distilled."""
    out = []
    for b in finals:
        best = best_reference(refs.get(b["setup"]["trial"], []))
        if best is not None and "kd" in b["summary"]["arms"]:
            out.append((b, best, refs[b["setup"]["trial"]]))
    return out


def references_section(finals: list[dict[str, Any]], refs: dict[int, list[dict[str, Any]]],
                       teacher: dict[str, Any]) -> list[str]:
    rows = compared(finals, refs)
    if not rows:
        return []
    head = ["size band", "search's student", "distilled test", "best reference of at most its size",
            "its distilled test", "search - reference, points [95% CI]", "every reference (distilled test)"]
    lines = ["### Against hand-written references", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b, best, every in rows:
        kd, rkd = b["summary"]["arms"]["kd"], best["summary"]["arms"]["kd"]
        others = ", ".join(f"{r['setup']['reference']} {r['trial']['params']:,}: "
                           + (accuracy(r["summary"]["arms"]["kd"]) if "kd" in r["summary"]["arms"] else "none yet")
                           for r in sorted(every, key=lambda r: r["setup"]["reference"]))
        lines.append("| " + " | ".join([
            band(b, teacher), f"trial {b['setup']['trial']} `{b['trial']['arch']}` ({b['trial']['params']:,})",
            accuracy(kd), f"{best['setup']['reference']} `{best['trial']['arch']}` ({best['trial']['params']:,})",
            accuracy(rkd), difference(b, best)[1], others]) + " |")
    return lines + ["", "Each reference scaled to the largest width with at most the search student's parameters "
                    "and trained beside it by the same arms, recipe, epochs, seeds, T and alpha, each arm choosing "
                    "its learning rate on validation from the same grid; the best reference is the one with the best "
                    "distilled validation accuracy. Accuracy: mean ± sd over seeds. The difference pairs the seeds "
                    "(same batch order), with its 95% t-interval.", ""]


def reference_aim_lines(finals: list[dict[str, Any]], refs: dict[int, list[dict[str, Any]]],
                        teacher: dict[str, Any]) -> list[str]:
    """One line per size band: is the search's student at least as accurate as the best reference?"""
    lines = []
    for b, best, _ in compared(finals, refs):
        diff, text = difference(b, best)
        lines.append(f"- Size band {band(b, teacher)}: trial {b['setup']['trial']} distilled "
                     f"{accuracy(b['summary']['arms']['kd'])} against the best hand-written reference of at most its "
                     f"size, {best['setup']['reference']} `{best['trial']['arch']}` ({best['trial']['params']:,} "
                     f"params), {accuracy(best['summary']['arms']['kd'])} ({text} points); the search's student at "
                     f"least as accurate: **{'met' if diff >= 0 else 'not met'}**")
    return lines
