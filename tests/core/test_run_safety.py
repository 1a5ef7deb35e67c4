"""A run folder that a person's files, a second writer, a full disk or a hand edit cannot spoil:
only genstudio's own files are ever deleted, a run is made only in a new or empty folder (or
over one that died before its first checkpoint), one process writes a run at a time, appends
are whole, and a damaged config.json or metrics.jsonl is a clear error or a skipped line."""

import dataclasses
import errno
import json
import os
import re
import stat

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from genstudio.core.data import load_source
from genstudio.core.runs import atomic
from genstudio.core.runs.atomic import TEMP_TAG, append_line, atomic_path
from genstudio.core.runs.checkpoint import CheckpointError
from genstudio.core.runs.run import RunDir, RunError, TrainSettings, load_run
from genstudio.core.runtime.training import Trainer
from genstudio.core.trained.compare import summarize_run

TINY = TrainSettings(
    family="vae", data="builtin:tins", size=8, steps=2, batch=2, seed=0, device="cpu",
    family_config={"base_channels": 4, "latent_dim": 2}, sample_every=0, checkpoint_every=1,
    grid_samples=1, eval_images=0,
)


def _train(run, settings=TINY, resume=False):
    return list(Trainer(settings, str(run), resume=resume).run())


def _folder(path, n):
    path.mkdir(exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(path / f"img{i:03d}.png")
    return path


# -- only files genstudio made are deleted -----------------------------------------------------


def test_temporary_files_are_named_so_that_only_ours_are_removed(tmp_path):
    with atomic_path(tmp_path / "checkpoint.safetensors") as tmp:
        assert TEMP_TAG in tmp.name and tmp.name.startswith(".checkpoint.safetensors")
    run = tmp_path / "run"
    _train(run)
    mine = [run / ".notes.tmp", run / ".checkpoint.safetensors.x.tmp", run / "samples" / ".draft.tmp"]
    for path in mine:
        path.write_text("the user's")
    stale = run / f".checkpoint.safetensors{TEMP_TAG}abc123.tmp"
    stale.write_bytes(b"left by a killed save")
    _train(run, dataclasses.replace(TINY, steps=3), resume=True)
    assert not stale.exists()
    assert all(path.read_text() == "the user's" for path in mine)


def test_a_write_that_must_not_replace_keeps_the_file_there_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "picture.png"
    target.write_bytes(b"the user's")
    with pytest.raises(FileExistsError):
        atomic.write_atomic(target, lambda tmp: tmp.write_bytes(b"ours"), replace=False)
    assert target.read_bytes() == b"the user's" and os.listdir(tmp_path) == ["picture.png"]
    atomic.write_atomic(tmp_path / "new.png", lambda tmp: tmp.write_bytes(b"ours"), replace=False)
    assert (tmp_path / "new.png").read_bytes() == b"ours"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_users_umask(tmp_path, umask):
    before = os.umask(umask)
    try:
        atomic.write_atomic(tmp_path / "a.png", lambda tmp: tmp.write_bytes(b"x"))
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o666 & ~umask


def test_exports_are_named_by_run_seed_and_index_and_never_replace_a_file(tmp_path):
    from genstudio.core.trained.sampling import export_images, kept_beside

    images = np.arange(3 * 4 * 4 * 3, dtype=np.uint8).reshape(3, 4, 4, 3)
    first = export_images(images, tmp_path, {"seed": 7}, "myrun-seed7", indices=[0, 2])
    assert [p.name for p in first] == ["myrun-seed7-0000.png", "myrun-seed7-0002.png"]
    before = {p: p.read_bytes() for p in first}
    again = export_images(images[::-1].copy(), tmp_path, {"seed": 7}, "myrun-seed7", indices=[0, 2])
    assert [p.name for p in again] == ["myrun-seed7-0000-2.png", "myrun-seed7-0002-2.png"]
    assert all(p.read_bytes() == data for p, data in before.items())  # the first export is untouched
    assert [kept_beside(p) for p in first + again] == [False, False, True, True]
    replaced = export_images(images[::-1].copy(), tmp_path, {"seed": 7}, "myrun-seed7", indices=[0], overwrite=True)
    assert replaced == first[:1] and replaced[0].read_bytes() == again[0].read_bytes()


def test_a_new_run_is_refused_in_a_folder_holding_other_files(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(RunError, match=r"holds files that are not a genstudio run's \(holiday.jpg\)"):
        Trainer(TINY, str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _train(empty)  # an empty folder is fine
    assert (empty / "checkpoint.safetensors").is_file()


def test_a_run_that_died_before_its_first_checkpoint_can_be_started_again(tmp_path):
    run = tmp_path / "run"
    Trainer(TINY, str(run)).release()  # made its folder and config.json, never saved
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9}\n')
    with pytest.raises(RunError, match="ended before its first checkpoint.*without --resume"):
        Trainer(TINY, str(run), resume=True)
    _train(run)
    assert [r["step"] for r in RunDir(run).read_metrics()] == [2]  # the dead run's record is gone
    with pytest.raises(RunError, match="already holds a run; use --resume"):
        Trainer(TINY, str(run))


# -- whole appends -----------------------------------------------------------------------------


def test_an_append_after_a_torn_one_is_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo')  # a write cut short by a full disk
    RunDir(tmp_path).append_metrics({"step": 3, "fid": 40.0})
    assert [r["step"] for r in RunDir(tmp_path).read_metrics()] == [1, 3]
    assert path.read_text().endswith('"fid": 40.0}\n')


def test_an_append_that_fails_part_way_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n')
    real_write = os.write

    def disk_full_after(fd, data):
        real_write(fd, data[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", disk_full_after)
    with pytest.raises(OSError, match="No space left"):
        append_line(path, json.dumps({"step": 2}))
    monkeypatch.undo()
    assert path.read_text() == '{"step": 1}\n'


# -- the run and its data ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same", "inside"])
def test_a_run_inside_its_image_folder_is_refused(tmp_path, where):
    data = _folder(tmp_path / "data", 3)
    out = data if where == "same" else data / "runs" / "one"
    with pytest.raises(RunError, match="inside the image folder"):
        Trainer(dataclasses.replace(TINY, data=str(data)), str(out))
    assert sorted(p.name for p in data.iterdir()) == ["img000.png", "img001.png", "img002.png"]


def test_a_resume_refuses_images_that_changed_since_the_run_began(tmp_path):
    data = _folder(tmp_path / "data", 24)
    settings = dataclasses.replace(TINY, data=str(data))
    _train(tmp_path / "run", settings)
    held_out = json.loads((tmp_path / "run" / "config.json").read_text())["dataset"]["held_out_images"]
    assert held_out == 2
    _folder(data, 30)  # six more: the split by count would move images between train and test
    with pytest.raises(RunError, match=r"changed since this run began \(24 images then, 30 now\)"):
        Trainer(dataclasses.replace(settings, steps=3), str(tmp_path / "run"), resume=True)
    for extra in range(24, 30):
        (data / f"img{extra:03d}.png").unlink()
    (data / "img000.png").rename(data / "renamed.png")  # the same count, other files
    with pytest.raises(RunError, match=r"\(24 images, not all the same\)"):
        Trainer(dataclasses.replace(settings, steps=3), str(tmp_path / "run"), resume=True)
    (data / "renamed.png").rename(data / "img000.png")
    _train(tmp_path / "run", dataclasses.replace(settings, steps=3), resume=True)


def test_the_fingerprint_follows_the_files_not_the_folders_place(tmp_path):
    first = load_source(str(_folder(tmp_path / "a", 3)), 8)
    moved = load_source(str(_folder(tmp_path / "b", 3)), 8)
    assert first.fingerprint() == moved.fingerprint()
    (tmp_path / "b" / "img002.png").unlink()
    assert load_source(str(tmp_path / "b"), 8).fingerprint() != first.fingerprint()


# -- one writer at a time --------------------------------------------------------------------


def test_a_second_writer_is_refused_while_the_first_holds_the_run(tmp_path):
    run = tmp_path / "run"
    _train(run)
    first = Trainer(dataclasses.replace(TINY, steps=4), str(run), resume=True)
    with pytest.raises(RunError, match=rf"is in use by process {os.getpid()} on .* \(resuming, since "):
        Trainer(dataclasses.replace(TINY, steps=4), str(run), resume=True)
    list(first.run())  # the end of the run releases it
    _train(run, dataclasses.replace(TINY, steps=5), resume=True)
    assert load_run(run).step == 5
    steps = [r["step"] for r in RunDir(run).read_metrics()]
    assert steps == sorted(set(steps))  # no step logged twice


def test_a_new_run_in_a_folder_being_made_by_another_is_refused(tmp_path):
    run = tmp_path / "run"
    first = Trainer(TINY, str(run))  # before its first checkpoint
    with pytest.raises(RunError, match="is in use by process"):
        Trainer(TINY, str(run))
    first.release()


# -- hand-edited files ---------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "message"), [
    ([1, 2], "holds a list, not an object"),
    (None, "holds null, not an object"),
    ({"family": "vae"}, "it has no settings"),
    ({"settings": [1]}, "its settings are a list, not an object"),
    ({"settings": {"steps": "10"}}, 'settings.steps is "10", not a whole number'),
    ({"settings": {"seed": 1.5}}, "settings.seed is 1.5, not a whole number"),
    ({"settings": {"channels": "rgb"}}, 'settings.channels is "rgb", not a whole number or null'),
    ({"settings": {"eval_metrics": [1]}}, "settings.eval_metrics is \\[1\\], not a list of strings"),
])
def test_a_hand_edited_config_is_a_clear_error(tmp_path, config, message):
    run = tmp_path / "run"
    _train(run)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=message):
        load_run(run)
    with pytest.raises(RunError, match=message):
        Trainer(TINY, str(run), resume=True)


def test_metric_lines_that_are_not_records_are_left_out(tmp_path):
    run = tmp_path / "run"
    _train(run)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('null\n42\n[1, 2]\n"text"\n{"step": "abc"}\n{"step": true}\n{"loss": 1}\n' + "[" * 100_000 + "\n")
    assert [r["step"] for r in RunDir(run).read_metrics()] == [2]
    assert summarize_run(run).step == 2
    _train(run, dataclasses.replace(TINY, steps=3), resume=True)
    assert [r["step"] for r in RunDir(run).read_metrics()] == [2, 3]


def test_skipped_file_names_cannot_drive_the_terminal(tmp_path):
    data = _folder(tmp_path / "data", 2)
    (data / "evil\x1b]0;owned\x07.png").write_text("not an image")
    (data / "x.png: fine\n  skipped forged.png").write_text("not an image")
    skipped = load_source(str(data), 8).skipped
    assert sorted(s.path for s in skipped) == ["evil\\x1b]0;owned\\x07.png", "x.png: fine\\x0a  skipped forged.png"]
    assert all(s.path.isprintable() and s.reason.isprintable() for s in skipped)
    assert np.all(load_source(str(data), 8).images.shape[0] == 2)


# -- checkpoints edited or damaged -------------------------------------------------------------


def _edit_checkpoint(path, *, meta=None, skeleton=None, tensors=None):
    """Rewrite a checkpoint with its metadata, skeleton or tensors changed by the callables given."""
    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata())
        table = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    if meta is not None:
        header["meta"] = meta(json.loads(header["meta"]))
    if skeleton is not None:
        header["skeleton"] = skeleton
    if tensors is not None:
        table = tensors(table)
    save_file(table, str(path), metadata=header)


def _trained_twice(run):
    _train(run, dataclasses.replace(TINY, steps=2))  # checkpoints at 1 and 2: prev holds step 1
    return run / "checkpoint.safetensors", run / "checkpoint.prev.safetensors"


def _without(key):
    return lambda meta: json.dumps({k: v for k, v in meta.items() if k != key})


def _first_weight(table):
    return next(key for key in table if key.startswith("family.") and table[key].is_floating_point()
                and table[key].dim() > 1)


@pytest.mark.parametrize(("edit", "message"), [
    ({"meta": _without("spec")}, "its metadata's spec is null"),
    ({"meta": lambda m: json.dumps({**m, "spec": {**m["spec"], "depth": 3}})}, "its metadata's spec is"),
    ({"meta": lambda m: json.dumps([m])}, "its metadata is not an object"),
    ({"meta": lambda m: json.dumps({**m, "step": "2"})}, "its metadata's step is \"2\""),
    ({"skeleton": "[" * 200_000 + "]" * 200_000}, "damaged header"),
    ({"tensors": lambda t: {**t, _first_weight(t): torch.zeros(3, 3)}}, "does not fit the model it describes"),
    ({"tensors": lambda t: {**t, _first_weight(t): torch.full_like(t[_first_weight(t)], float("nan"))}},
     r"holds NaN or inf values \(in family\."),
])
def test_an_edited_checkpoint_falls_back_to_the_previous_one_or_is_one_clear_error(tmp_path, edit, message):
    newest, previous = _trained_twice(tmp_path / "run")
    _edit_checkpoint(newest, **edit)
    loaded = load_run(tmp_path / "run", "cpu")
    assert loaded.step == 1 and "loaded the previous checkpoint" in loaded.notice
    assert re.search(message, loaded.notice)
    trainer = Trainer(dataclasses.replace(TINY, steps=3), str(tmp_path / "run"), resume=True)
    assert trainer.step == 1
    trainer.release()
    previous.unlink()
    with pytest.raises(CheckpointError, match=message):
        load_run(tmp_path / "run", "cpu")
    with pytest.raises(RunError, match=f"cannot resume .*{message}"):
        Trainer(dataclasses.replace(TINY, steps=3), str(tmp_path / "run"), resume=True)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["settings"].update(size=16), r"it was trained for 8×8 px with 3 channel\(s\), config.json and the "
                                              r"data say 16×16 px"),
    (lambda c: c["settings"]["family_config"].update(latent_dim=5), "does not fit the model it describes"),
])
def test_a_config_that_no_longer_matches_its_checkpoint_is_one_clear_error(tmp_path, edit, message):
    run = tmp_path / "run"
    _trained_twice(run)
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=message):
        Trainer(dataclasses.replace(TINY, steps=3), str(run), resume=True)
