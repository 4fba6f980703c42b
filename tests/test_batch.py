"""Many files in one run (`jfb deblur|restore a.png b.jpg ... -o out/`, a folder of them;
`jfb.restore_images`): the model loaded once, a failing file reported while the others are done,
inputs never overwritten, existing outputs skipped unless --force, interrupted runs resumed."""

from __future__ import annotations

import io
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import jfb
import jfb.deblur
from jfb.batch import is_batch, plan_outputs
from jfb.cli import main
from jfb.errors import DataError, TrustWarning

FAST = ["--checkpoint", "faces", "--max-iter", "2", "--quiet"]  # two iterations: ~0.3 s an image


def _photo(path, shift=0, size=(24, 32)):
    """A smooth 8-bit RGB image at ``path``."""
    ramp = np.linspace(0, 1, size[1])[None, :, None] * np.ones((*size, 3))
    Image.fromarray((ramp * 200 + shift).astype(np.uint8)).save(path)
    return path


@pytest.fixture()
def folder(tmp_path):
    """in/: a.png, b.jpg and bad.png (not an image)."""
    d = tmp_path / "in"
    d.mkdir()
    _photo(d / "a.png")
    _photo(d / "b.jpg", shift=30)
    (d / "bad.png").write_bytes(b"this is not a png")
    return d


@pytest.fixture()
def loads(monkeypatch):
    """How many times a model was loaded."""
    calls = []
    real = jfb.deblur.load_model
    monkeypatch.setattr(jfb.deblur, "load_model",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if ": error: " in line]
    return code, out, errors


def test_a_corrupt_file_is_reported_and_the_others_are_done(folder, tmp_path, loads, capsys):
    out = tmp_path / "out"
    code, stdout, errors = _run(["deblur", str(folder), "-o", f"{out}/", *FAST], capsys)
    assert code == 2  # a file failed
    assert len(errors) == 1 and "bad.png" in errors[0], errors
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg"]
    assert Image.open(out / "b.jpg").format == "JPEG"  # named after its input, suffix kept
    assert stdout.strip().splitlines()[-1] == "2 done, 0 skipped, 1 failed"
    assert loads == [1]  # one model for every file


def test_existing_outputs_are_skipped_unless_force(folder, tmp_path, capsys):
    (folder / "bad.png").unlink()
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"done before")
    argv = ["deblur", str(folder / "a.png"), str(folder / "b.jpg"), "-o", str(out), *FAST]
    code, stdout, errors = _run(argv, capsys)
    assert code == 0 and not errors
    assert (out / "a.png").read_bytes() == b"done before"
    assert "skipped: " in stdout and "1 done, 1 skipped (output exists), 0 failed" in stdout
    code, stdout, errors = _run([*argv, "--force"], capsys)
    assert code == 0 and "2 done, 0 skipped, 0 failed" in stdout
    assert Image.open(out / "a.png").size == (32, 24)  # redone


def test_inputs_are_never_overwritten_and_the_run_is_refused_before_any_work(
        folder, tmp_path, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("a model was loaded before the outputs were checked")

    monkeypatch.setattr(jfb.deblur, "load_model", no_work)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.png").hardlink_to(folder / "a.png")  # the same file under another name
    (out / "a.png").hardlink_to(folder / "b.jpg")
    cases = [
        [str(folder), "-o", str(folder)],  # into the input folder
        [str(folder / "a.png"), "-o", f"{folder}/"],  # one input, its own folder
        [str(out / "x.png"), "-o", str(out)],  # an input is its own output
        [str(folder / "a.png"), str(folder / "b.jpg"), "-o", str(out)],  # another input's file
        [str(folder / "a.png"), str(out / "a.png"), "-o", str(out)],  # two inputs, one output
        [str(folder / "a.png"), str(_photo(tmp_path / "a.png")), "-o", str(tmp_path / "new")],
    ]
    for args in cases:
        code, stdout, errors = _run(["deblur", *args, "--force", *FAST], capsys)
        assert code == 2 and len(errors) == 1, (args, errors)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert (out / "x.png").read_bytes() == before["a.png"]


def test_an_interrupted_run_leaves_no_partial_file_and_resumes(folder, tmp_path, monkeypatch,
                                                               capsys):
    (folder / "bad.png").unlink()
    out = tmp_path / "out"
    real = jfb.deblur.restore_tensor
    calls = []

    def interrupted_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(jfb.deblur, "restore_tensor", interrupted_at_the_second)
    assert main(["deblur", str(folder), "-o", f"{out}/", *FAST]) == 130
    assert [p.name for p in out.iterdir()] == ["a.png"]  # no temporary or partial file
    monkeypatch.setattr(jfb.deblur, "restore_tensor", real)
    capsys.readouterr()
    code, stdout, errors = _run(["deblur", str(folder), "-o", f"{out}/", *FAST], capsys)
    assert code == 0 and "1 done, 1 skipped (output exists), 0 failed" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg"]


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_progress_bar_over_the_files_and_their_tiles(folder, tmp_path, monkeypatch):
    (folder / "bad.png").unlink()
    _photo(folder / "a.png", size=(40, 48))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    assert main(["restore", str(folder), "-o", f"{tmp_path / 'out'}/", "--max-iter", "2",
                 "--tile", "16", "--margin", "8", "--noise", "0.005", "--checkpoint", "faces"]) == 0
    shown = sys.stderr.getvalue()
    assert "restoring a.png, file 0/2" in shown and "tile 1/" in shown
    assert "file 2/2" in shown and "done in" in shown
    assert "restoring, tile" not in shown  # no bar of its own per file


def test_the_python_api_returns_what_was_done(folder, tmp_path):
    lines = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = jfb.restore_images([folder / "bad.png", folder / "a.png"], tmp_path / "o",
                                    max_iter=2, error=lines.append, checkpoint="faces")
    assert all(str(w.message).startswith("a.png: ") for w in caught
               if issubclass(w.category, TrustWarning))  # each warning names its file
    assert result.written == [tmp_path / "o" / "a.png"] and result.skipped == []
    assert [src for src, _ in result.failed] == [folder / "bad.png"]
    assert lines == [result.failed[0][1]] and "bad.png" in lines[0]
    assert result.summary() == "1 done, 0 skipped, 1 failed"
    again = jfb.restore_images(folder / "a.png", tmp_path / "o", max_iter=2, warn=print,
                               checkpoint="faces")
    assert again.skipped == [tmp_path / "o" / "a.png"] and again.written == []


def test_what_is_a_batch_and_how_outputs_are_named(tmp_path):
    _photo(tmp_path / "one.png")
    assert not is_batch([tmp_path / "one.png"], tmp_path / "x.png")
    assert is_batch([tmp_path / "one.png"], f"{tmp_path}/o/")
    assert is_batch([tmp_path], tmp_path / "o")
    assert is_batch([tmp_path / "one.png", tmp_path / "two.png"], tmp_path / "o")
    files = [tmp_path / "s.npy", tmp_path / "b.JPG", tmp_path / "c.v2.tif"]
    assert plan_outputs(files, tmp_path / "o") == [tmp_path / "o" / n
                                                   for n in ("s.png", "b.JPG", "c.v2.tif")]
    with pytest.raises(DataError, match="is a file"):
        plan_outputs(files, tmp_path / "one.png")
    with pytest.raises(DataError, match="names a file"):
        plan_outputs(files, tmp_path / "sharp.jpg")  # a typo for a file, not made a folder
    assert plan_outputs(files[:1], f"{tmp_path}/sharp.jpg/") == [tmp_path / "sharp.jpg" / "s.png"]
    with pytest.raises(DataError, match="no image files"):
        jfb.restore_images(tmp_path / "o", tmp_path / "p")  # an empty folder
