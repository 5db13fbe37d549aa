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


def test_a_resumed_task_s_time_left_comes_from_this_process_s_own_pace(monkeypatch):
    """Resumed at 90% of the work, 1% more in 10 s leaves 9% at that pace: 90 s, not the 1 s that dividing
    the time spent by the share done would say."""
    clock = iter([0.0, 0.0, 10.0])
    monkeypatch.setattr("kdsearch.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    progress = LineProgress(Console(file=out, force_terminal=False, width=200), every=5.0)
    task = progress.add_task("supernet", total=100, completed=90)
    progress.update(task, completed=91)
    assert out.getvalue().startswith("supernet: 91/100 (91%), 0:00:10 elapsed, about 0:01:30 left")


def test_a_terminal_gets_rich_live_bar():
    console = Console(file=io.StringIO(), force_terminal=True)
    assert not isinstance(progress_bar(console), LineProgress)
