"""The one progress helper of the long commands: a rich bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io
import re

from movierec.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def text(self) -> str:
        """What was written, without the terminal's colour and cursor codes."""
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.getvalue())


def test_off_a_terminal_steps_are_plain_lines_and_byte_counts_silent() -> None:
    out = io.StringIO()
    with Progress(stream=out) as progress:
        assert not progress.live
        task = progress.track("epoch", total=3)
        task.step(1, "loss 1.2042  valid rmse 1.0579")
        progress.line("refit on all ratings")
        progress.track("epoch", total=2).step(2, "loss 1.0333")
        progress.track("chunk").step(7)
        data = progress.track("importing u.data", total=2_000_000)
        data.advance(65536)
        data.update(1_000_000, 2_000_000)
        assert data.advance_hook is None and data.update_hook is None
    assert out.getvalue() == ("  epoch 1/3  loss 1.2042  valid rmse 1.0579\n"
                              "refit on all ratings\n"
                              "  epoch 2/2  loss 1.0333\n"
                              "  chunk 7\n")


def test_on_a_terminal_a_bar_moves_and_lines_print_above_it() -> None:
    out = Terminal()
    with Progress(stream=out) as progress:
        assert progress.live
        task = progress.track("epoch", total=4)
        task.step(3, "loss 0.9000")
        progress.line("evaluation [1/2]")  # printed as is, not read as rich markup
    shown = out.text()
    assert "3/4" in shown and "loss 0.9000" in shown and "evaluation [1/2]" in shown
    assert "  epoch 3/4" not in shown  # the bar, not the plain line


def test_on_a_terminal_byte_hooks_feed_the_bar() -> None:
    out = Terminal()
    with Progress("bytes", stream=out) as progress:
        task = progress.track("importing u.data", total=2_000_000)
        assert task.advance_hook is not None and task.update_hook is not None
        task.advance_hook(1_000_000)
        task.advance_hook(1_000_000)
    assert "importing u.data" in out.text() and "2.0/2.0 MB" in out.text()
    fetch = Terminal()
    with Progress("bytes", transient=True, stream=fetch) as progress:
        task = progress.track("fetching ml-100k")
        assert task.update_hook is not None
        task.update_hook(500_000, None)
        task.update_hook(1_000_000, 1_000_000)
        assert progress._bar is not None and progress._bar.tasks[0].completed == 1_000_000
        assert progress._bar.tasks[0].total == 1_000_000
