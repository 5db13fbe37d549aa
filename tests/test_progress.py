"""Long work is never silent: in a log (no terminal) progress comes as periodic lines with time left."""

import io

from rich.console import Console

from kdsearch.progress import LineProgress, progress_bar


def test_a_log_gets_lines_with_elapsed_and_time_left():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    progress = progress_bar(console, every=0.0)
    assert isinstance(progress, LineProgress)
    with progress:
        task = progress.add_task("teacher logits", total=100)
        progress.update(task, completed=25)
        progress.advance(task, 25)
        progress.remove_task(task)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("teacher logits: 25/100 (25%), 0:00:00 elapsed, about") and "left" in lines[0]
    assert lines[1].startswith("teacher logits: 50/100 (50%)")
    assert lines[-1].startswith("teacher logits: 50/100") and "left" not in lines[-1]  # the closing line


def test_a_terminal_gets_rich_live_bar():
    console = Console(file=io.StringIO(), force_terminal=True)
    assert not isinstance(progress_bar(console), LineProgress)
