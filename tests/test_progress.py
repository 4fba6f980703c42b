"""jfb.progress: count, rate and ETA on a terminal line, measured with a fake clock."""

from __future__ import annotations

import io

import pytest

from jfb.progress import (
    NullProgress,
    ProgressBar,
    format_duration,
    is_silenced,
    progress_bar,
    silenced,
)
from jfb.train.log import Progress


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def tty_bar(total, clock, **kw):
    stream = FakeTTY()
    kw = {"unit": "image", "min_interval": 0.0, **kw}
    return ProgressBar(total, "job", stream=stream, is_tty=True, clock=clock, **kw), stream


def last_line(stream: io.StringIO) -> str:
    return stream.getvalue().split("\r\x1b[2K")[-1].rstrip("\n")


def test_eta_is_the_work_left_at_the_measured_rate():
    clock = Clock()
    bar, out = tty_bar(100, clock)
    for k in range(1, 11):
        clock.t = float(k)
        bar.update()
    assert bar.rate() == pytest.approx(1.0)
    assert bar.eta() == pytest.approx(90.0)
    line = last_line(out)
    assert line.startswith("job, image  10/100 [##")
    assert "10%" in line and "1 image/s" in line and "ETA 01:30" in line
    clock.t = 20.0
    bar.update(40, psnr=31.25)  # 50 done in 20 s: 2.5 per second, 50 left
    assert bar.eta() == pytest.approx(20.0)
    assert last_line(out).endswith("ETA 00:20 | psnr 31.25")


def test_slow_work_shows_seconds_per_unit_and_hours():
    clock = Clock()
    bar, out = tty_bar(1000, clock, unit="tile")
    clock.t = 40.0
    bar.update(10)
    assert "4 s/tile" in last_line(out) and "ETA 1:06:00" in last_line(out)


def test_the_rate_is_that_of_the_last_window_not_of_the_whole_run():
    """60 s at 1 unit/s, then 40 s at 3 units/s: the ETA uses 3 units/s (the whole-run mean,
    1.8 units/s, would say 3 times 1.67 as long)."""
    clock = Clock()
    bar, _ = tty_bar(1000, clock, rate_window=30.0)
    for _ in range(60):
        clock.t += 1.0
        bar.update(1)
    for _ in range(40):
        clock.t += 1.0
        bar.update(3)
    assert bar.count == 180
    assert bar.rate() == pytest.approx(3.0)
    assert bar.eta() == pytest.approx(820 / 3)


def test_a_count_that_goes_back_measures_the_rate_afresh():
    clock = Clock()
    bar, _ = tty_bar(200, clock)
    clock.t = 50.0
    bar.update_to(50)
    clock.t = 60.0
    bar.update_to(40)  # a rollback
    clock.t = 70.0
    bar.update_to(50)
    assert bar.rate() == pytest.approx(1.0)  # 10 in 10 s since the rollback, not 50 in 70 s
    assert bar.eta() == pytest.approx(150.0)


def test_reset_times_from_the_resumed_count():
    clock = Clock()
    bar, out = tty_bar(300, clock)
    clock.t = 1000.0  # e.g. checkpoint loading before a resumed run starts
    bar.reset(200)
    clock.t = 1010.0
    bar.update_to(210)
    assert bar.eta() == pytest.approx(90.0)
    clock.t = 1100.0
    bar.update_to(300)
    assert "done in 01:40" in last_line(out)


def test_unknown_total_shows_count_and_elapsed_time():
    clock = Clock()
    bar, out = tty_bar(None, clock)
    clock.t = 75.0
    bar.update(3)
    assert bar.eta() is None
    assert last_line(out).startswith("job, image 3 |") and "01:15 elapsed" in last_line(out)


def test_no_eta_before_any_progress():
    clock = Clock()
    bar, out = tty_bar(10, clock)
    clock.t = 5.0
    bar.update(0)
    assert bar.eta() is None and "ETA ?" in last_line(out)


def test_a_terminal_line_is_redrawn_at_most_every_min_interval():
    clock = Clock()
    bar, out = tty_bar(100, clock, min_interval=0.25)
    for _ in range(99):  # 10 s of updates, 0.1 s apart
        clock.t += 0.1
        bar.update()
    draws = out.getvalue().count("\r")
    assert 30 <= draws <= 50, draws  # every 0.3 s at the 0.1 s update grid
    clock.t += 0.01
    bar.update()  # complete: drawn whatever the interval
    assert out.getvalue().count("\r") == draws + 1 and "100/100" in last_line(out)
    bar.close()
    bar.close()
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1


def test_message_stays_above_the_live_line():
    clock = Clock()
    bar, out = tty_bar(10, clock)
    bar.update(3)
    bar.message("checkpoint written")
    text = out.getvalue()
    assert "\r\x1b[2Kcheckpoint written\n" in text
    assert text.endswith("image  3/10 [######..............]  30% | ETA ?")  # redrawn


def test_paused_clears_the_live_line_for_other_output_and_draws_it_again():
    clock = Clock()
    bar, out = tty_bar(10, clock)
    bar.update(3)
    with bar.paused():
        out.write("a line of stdout\n")  # the same terminal
    text = out.getvalue()
    assert "ETA ?\r\x1b[2Ka line of stdout\n" in text
    assert text.endswith("image  3/10 [######..............]  30% | ETA ?")  # redrawn
    quiet = NullProgress(10)
    with quiet.paused():  # nothing to clear
        pass


def test_progress_bar_shows_nothing_off_a_terminal_when_disabled_or_silenced(monkeypatch):
    plain = io.StringIO()
    bar = progress_bar(10, "job", stream=plain)
    assert isinstance(bar, NullProgress)
    with bar:
        bar.update(10, psnr=1.0)
        bar.message("hi")
    assert plain.getvalue() == ""

    tty = FakeTTY()
    with progress_bar(10, "job", stream=tty, enabled=False) as bar:
        bar.update(10)
    assert tty.getvalue() == ""
    with silenced():
        assert is_silenced()
        with progress_bar(10, "job", stream=tty) as bar:
            bar.update(10)
    assert not is_silenced() and tty.getvalue() == ""
    with silenced(False), progress_bar(10, "job", stream=tty) as bar:
        bar.update(10)
    assert "job, it 10/10" in tty.getvalue() and tty.getvalue().endswith("\n")

    monkeypatch.setattr("sys.stderr", FakeTTY())  # the default stream is stderr at call time
    assert type(progress_bar(5)) is ProgressBar


def test_plain_lines_off_a_terminal_only_when_forced_or_complete():
    out = io.StringIO()
    clock = Clock()
    bar = ProgressBar(4, unit="step", stream=out, is_tty=False, log_lines=True, clock=clock)
    for k in range(1, 5):
        clock.t = float(k)
        bar.update(force=(k == 2), loss=0.5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue() and "[" not in out.getvalue()
    assert lines[0] == "step 2/4 | 1 step/s | ETA 00:02 | loss 0.5"
    assert lines[1].startswith("step 4/4 | 1 step/s | done in 00:04")


def test_a_line_is_cut_to_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")
    bar, out = tty_bar(10, Clock())
    bar.update(2, note="a long postfix that does not fit")
    assert last_line(out) == "job, image  2/10 [####......."  # 29 characters


def test_format_duration():
    assert format_duration(0) == "00:00"
    assert format_duration(59.6) == "01:00"
    assert format_duration(3723) == "1:02:03"


def test_trainer_progress_counts_global_steps_from_the_resumed_step():
    clock = Clock()
    tty = FakeTTY()
    p = Progress(100, stream=tty, is_tty=True, min_interval=0.0, clock=clock)
    clock.t = 500.0
    p.restart(50)
    clock.t = 510.0
    p.update(60, loss=1e-3, psnr=30.0)
    line = last_line(tty)
    assert line.startswith("step  60/100 [")
    assert "ETA 00:40" in line and "loss 1.000e-03 | psnr 30.00 dB" in line
    with silenced():
        quiet = FakeTTY()
        Progress(10, stream=quiet, is_tty=True).update(10, force=True)
    assert quiet.getvalue() == ""
