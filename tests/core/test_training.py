"""The core training loop: run directory, exact resume, stop/pause, reproducibility."""

import dataclasses
import json
import math
import threading
import time

import pytest
import torch

from genstudio.core.runs.checkpoint import load_checkpoint
from genstudio.core.runs.run import RunError, TrainSettings, load_run
from genstudio.core.runtime.training import (
    CheckpointSaved,
    Evaluated,
    Notice,
    PauseChanged,
    RunStarted,
    SamplesReady,
    StepLogged,
    Trainer,
    TrainingControl,
    TrainingFinished,
)

TINY = TrainSettings(
    family="vae", data="builtin:shapes", size=16, steps=10, batch=8, seed=3, device="cpu",
    family_config={"base_channels": 4, "latent_dim": 3}, log_every=2, sample_every=5,
    checkpoint_every=5, grid_samples=4, eval_images=0,
)


def _weights(run_dir):
    state, _ = load_checkpoint(run_dir / "checkpoint.safetensors")
    return state


def _run(settings, run_dir, resume=False, control=None):
    return list(Trainer(settings, str(run_dir), resume=resume).run(control))


def test_a_run_writes_its_directory(tmp_path):
    events = _run(TINY, tmp_path / "run")
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["family"] == "vae" and config["spec"] == {"channels": 3, "size": 16, "num_classes": 0}
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4, 6, 8, 10]
    assert {"loss", "bpd", "recon", "kl", "images_per_sec"} <= set(metrics[0])
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000005.png", "step_0000010.png"]
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 10
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], TrainingFinished)
    assert events[-1].reason == "completed"
    kinds = {type(e) for e in events}
    assert {StepLogged, SamplesReady, CheckpointSaved} <= kinds
    assert not [p for p in run.rglob("*.tmp")]


def test_a_new_run_starts_from_the_widths_suggested_for_its_images_unless_it_sets_them(tmp_path):
    larger = dataclasses.replace(TINY, size=40, steps=1, batch=2, family_config={"latent_dim": 3},
                                 sample_every=0, checkpoint_every=0)
    trainer = Trainer(larger, str(tmp_path / "run"))
    assert trainer.suggested == {"base_channels": 24}  # 32 × 32/40, to a multiple of 8
    assert trainer.family.config.base_channels == 24 and trainer.family.config.latent_dim == 3
    list(trainer.run())
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["family_config"]["base_channels"] == 24
    resumed = Trainer(dataclasses.replace(larger, steps=2), str(tmp_path / "run"), resume=True)
    assert resumed.suggested == {} and resumed.family.config.base_channels == 24

    chosen = Trainer(dataclasses.replace(larger, family_config={"latent_dim": 3, "base_channels": 4}),
                     str(tmp_path / "chosen"))
    assert chosen.suggested == {} and chosen.family.config.base_channels == 4
    at_home = Trainer(dataclasses.replace(larger, size=32), str(tmp_path / "at-32"))
    assert at_home.suggested == {} and at_home.family.config.base_channels == 32


def test_resume_continues_exactly(tmp_path):
    _run(TINY, tmp_path / "straight")
    _run(dataclasses.replace(TINY, steps=5), tmp_path / "split")
    _run(TINY, tmp_path / "split", resume=True)  # continues to the total of 10 steps
    straight, split = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    for name in straight["family"]["networks"]:
        for key, tensor in straight["family"]["networks"][name].items():
            assert torch.equal(tensor, split["family"]["networks"][name][key]), f"{name}.{key}"
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 5, 6, 8, 10]  # the first part logged its last step, 5


def test_a_resumed_run_takes_a_new_schedule_and_keeps_its_model_batch_and_seed(tmp_path):
    run = tmp_path / "run"
    _run(dataclasses.replace(TINY, steps=4, sample_every=0, checkpoint_every=0), run)
    asked = dataclasses.replace(TINY, steps=8, sample_every=2, log_every=4, batch=4, seed=9,
                                family_config={"base_channels": 8, "latent_dim": 3})
    trainer = Trainer(asked, str(run), resume=True)
    assert (trainer.settings.batch, trainer.settings.seed, trainer.family.config.base_channels) == (8, 3, 4)
    assert (trainer.settings.steps, trainer.settings.sample_every, trainer.settings.log_every) == (8, 2, 4)
    list(trainer.run(None))
    # The first part drew its grid at its end only; the second every 2 steps.
    grids = sorted(int(p.stem.split("_")[1]) for p in (run / "samples").glob("step_*.png"))
    assert grids == [4, 6, 8]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [2, 4, 8]
    # config.json says what the run trains with now, so a later resume keeps the new schedule.
    stored = TrainSettings.from_json(json.loads((run / "config.json").read_text())["settings"])
    assert stored == dataclasses.replace(TINY, steps=8, sample_every=2, log_every=4)
    # Drawing grids and logging on another schedule leaves the training itself as it was.
    _run(dataclasses.replace(TINY, steps=8, sample_every=0, checkpoint_every=0), tmp_path / "straight")
    straight, resumed = _weights(tmp_path / "straight"), _weights(run)
    for name, tensors in straight["family"]["networks"].items():
        for key, tensor in tensors.items():
            assert torch.equal(tensor, resumed["family"]["networks"][name][key]), f"{name}.{key}"


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    _run(dataclasses.replace(TINY, steps=5), run)
    with open(run / "metrics.jsonl", "a") as fh:  # as if it crashed after logging step 6
        fh.write(json.dumps({"step": 6, "loss": 1.0}) + "\n")
    _run(dataclasses.replace(TINY, steps=6), run, resume=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 5, 6]
    assert records[-1]["loss"] != 1.0  # the stale record was replaced by the real one


def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path):
    _run(dataclasses.replace(TINY, steps=2), tmp_path / "run")
    with pytest.raises(RunError, match="already holds a run"):
        Trainer(TINY, str(tmp_path / "run"))
    with pytest.raises(RunError, match="no checkpoint|not a genstudio run"):
        Trainer(TINY, str(tmp_path / "nothing"), resume=True)


def test_stop_finishes_the_step_and_saves_a_loadable_checkpoint(tmp_path):
    control = TrainingControl()
    events = []
    for event in Trainer(dataclasses.replace(TINY, steps=1000), str(tmp_path / "run")).run(control):
        events.append(event)
        if isinstance(event, StepLogged) and event.step == 4:
            control.stop()
    finished = events[-1]
    assert finished.reason == "stopped" and finished.step == 4
    loaded = load_run(tmp_path / "run", device="cpu")
    assert loaded.step == 4
    assert loaded.family.sample(2, seed=0).shape == (2, 3, 16, 16)


def test_pause_blocks_until_resumed_and_stop_wakes_a_paused_loop(tmp_path):
    control = TrainingControl()
    trainer = Trainer(dataclasses.replace(TINY, steps=1000), str(tmp_path / "run"))
    seen = []

    def consume():
        for event in trainer.run(control):
            seen.append(event)
            if isinstance(event, StepLogged) and event.step == 2:
                control.pause()

    thread = threading.Thread(target=consume)
    thread.start()
    for _ in range(100):
        if any(isinstance(e, PauseChanged) and e.paused for e in seen):
            break
        threading.Event().wait(0.05)
    step_when_paused = trainer.step
    threading.Event().wait(0.3)
    assert trainer.step == step_when_paused  # nothing trains while paused
    control.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert seen[-1].reason == "stopped"


def test_same_seed_same_model(tmp_path):
    _run(dataclasses.replace(TINY, steps=4), tmp_path / "a")
    _run(dataclasses.replace(TINY, steps=4), tmp_path / "b")
    a, b = load_run(tmp_path / "a", "cpu"), load_run(tmp_path / "b", "cpu")
    assert torch.equal(a.family.sample(3, seed=1), b.family.sample(3, seed=1))


def test_conditional_training_on_class_folders(tmp_path):
    settings = dataclasses.replace(TINY, steps=2, conditional=True)
    _run(settings, tmp_path / "run")
    loaded = load_run(tmp_path / "run", "cpu")
    assert loaded.family.spec.num_classes == 3
    assert loaded.class_names == ["circle", "square", "triangle"]


def test_a_finished_run_records_its_likelihood_bounds(tmp_path):
    events = _run(dataclasses.replace(TINY, eval_images=40), tmp_path / "run")
    evaluated = [e for e in events if isinstance(e, Evaluated)]
    assert len(evaluated) == 1 and evaluated[0].figures["reference_images"] == 40
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 10 and last["reference_images"] == 40 and last["reference_split"] == "held-out"
    assert last["eval_bpd"] == last["iwae_bpd"] and 0 < last["baseline_bpd"] < 8
    # The importance-weighted bound is the tighter one: more nats, fewer bits/dim.
    assert last["iwae_nats"] > last["elbo_nats"]
    assert last["iwae_bpd"] < last["elbo_bpd"]
    dims = 3 * 16 * 16
    assert last["elbo_bpd"] == pytest.approx(-last["elbo_nats"] / (dims * math.log(2)))


def test_evaluation_every_n_steps_measures_sample_quality_without_changing_training(tmp_path):
    settings = dataclasses.replace(TINY, eval_images=30, eval_every=4, eval_samples=30,
                                   eval_metrics=("bpd", "fid", "precision", "recall"))
    events = _run(settings, tmp_path / "evaluated")
    evaluations = [e for e in events if isinstance(e, Evaluated)]
    assert [e.step for e in evaluations] == [4, 8, 10]  # every 4 steps, then the final evaluation
    final = evaluations[-1].figures
    assert final["extractor"].startswith("random-conv-v1") and "fid" in final and "baseline_fid" in final
    assert "baseline_fid" not in evaluations[0].figures  # the floor row is scored once, at the end
    # Evaluating draws no randomness from training: the weights equal an unevaluated run's.
    _run(TINY, tmp_path / "plain")
    a, b = _weights(tmp_path / "evaluated"), _weights(tmp_path / "plain")
    for name in a["family"]["networks"]:
        for key, tensor in a["family"]["networks"][name].items():
            assert torch.equal(tensor, b["family"]["networks"][name][key]), f"{name}.{key}"


def test_the_feature_extractor_is_built_once_per_run(tmp_path, monkeypatch):
    import genstudio.core.runtime.training as training

    built = []
    real = training.get_extractor
    monkeypatch.setattr(training, "get_extractor", lambda pref: built.append(pref) or real(pref))
    settings = dataclasses.replace(TINY, eval_images=20, eval_every=2, eval_samples=20,
                                   eval_metrics=("bpd", "fid"))
    events = _run(settings, tmp_path / "run")
    assert len([e for e in events if isinstance(e, Evaluated)]) == 5  # steps 2, 4, 6, 8 and the end
    assert built == ["offline"]


@pytest.mark.parametrize("when", ["completed", "stopped"])
def test_a_stop_during_the_end_of_run_evaluation_is_answered_within_a_second(tmp_path, when):
    """A held-out bound can take minutes (a one-step diffusion run on a big colour folder took
    over ten); after a run completed, the first stop ends its evaluation, after a Stop the
    second does. Nothing is recorded for it and the run says so."""
    settings = dataclasses.replace(TINY, steps=2, eval_images=40, eval_every=0, sample_every=0)
    trainer = Trainer(settings, str(tmp_path / "run"))
    started = threading.Event()
    family = trainer.family

    def endless_bound(x, labels=None, *, quick=False):
        started.set()
        while True:  # each pass through the networks is a place to stop
            family.log_prob(x, labels, samples=1)

    family.likelihood_bounds = endless_bound  # a stand-in for a bound that takes minutes
    control = TrainingControl()
    if when == "stopped":
        control.stop()  # Stop at once: the run saves step 0, then evaluates
    answered = []

    def stop_when_evaluating():
        assert started.wait(60)
        asked = time.perf_counter()
        control.stop() if when == "completed" else control.hurry()
        answered.append(asked)

    stopper = threading.Thread(target=stop_when_evaluating)
    stopper.start()
    events = list(trainer.run(control))
    ended = time.perf_counter()
    stopper.join()
    assert ended - answered[0] < 1.0
    assert not [e for e in events if isinstance(e, Evaluated)]
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any("evaluation at step" in n and "was stopped; nothing was recorded" in n for n in notices)
    assert isinstance(events[-1], TrainingFinished) and events[-1].reason == when
    assert not [r for r in trainer.run_dir.read_metrics() if "reference_images" in r]


def test_a_time_limit_ends_the_run_as_stop_does(tmp_path):
    """`minutes`: the session trains that long (pauses left out), then saves its last whole step
    and draws its final samples; the ETA counts down to the limit."""
    from genstudio.core.runs.run import UNLIMITED_STEPS
    from genstudio.core.runtime.training import TIME_LIMIT_REACHED, Stopping

    settings = dataclasses.replace(TINY, steps=UNLIMITED_STEPS, minutes=1.5 / 60, sample_every=0,
                                   checkpoint_every=0, log_every=1)
    control = TrainingControl()
    events, times, paused = [], [], []
    for event in Trainer(settings, str(tmp_path / "run")).run(control):
        events.append(event)
        times.append(time.perf_counter())
        if isinstance(event, StepLogged) and event.step == 3:
            control.pause()
            threading.Timer(1.0, control.resume).start()  # a second that does not count
            paused.append(time.perf_counter())
    kinds = [type(e).__name__ for e in events if not isinstance(e, (StepLogged, PauseChanged))]
    assert kinds[-4:] == ["Stopping", "CheckpointSaved", "SamplesReady", "TrainingFinished"]
    stopping = next(e for e in events if isinstance(e, Stopping))
    assert stopping.why == "the 0.025-minute time limit is reached"
    finished = events[-1]
    assert finished.reason == TIME_LIMIT_REACHED and finished.step == stopping.step > 3
    assert load_run(tmp_path / "run", "cpu").step == finished.step
    started = times[0]
    stopped = times[events.index(stopping)]
    assert 2.5 <= stopped - started < 2.5 + 1.0  # 1.5 s of training and the 1 s pause
    logged = [e for e in events if isinstance(e, StepLogged)]
    assert all(e.eta_seconds is not None and e.eta_seconds <= 1.5 for e in logged)
    assert logged[-1].eta_seconds < logged[0].eta_seconds and 0 < logged[-1].done <= 1
    assert logged[-1].done > 0.5


def test_the_time_limit_cuts_a_slow_step_short(tmp_path):
    """A step that would run past the limit is abandoned and undone, as Stop abandons it."""
    settings = dataclasses.replace(TINY, steps=100, minutes=1.0 / 60, sample_every=0, checkpoint_every=0,
                                   eval_images=0)
    trainer = Trainer(settings, str(tmp_path / "run"))
    family = trainer.family
    real_step = family.train_step

    def slow_step(x, labels, generator):  # 0.6 s of network passes, a look before each
        until = time.perf_counter() + 0.6
        while time.perf_counter() < until:
            family.encoder(x, None)
        return real_step(x, labels, generator)

    family.train_step = slow_step
    started = time.perf_counter()
    events = list(trainer.run())
    stopping = next(e for e in events if type(e).__name__ == "Stopping")
    assert stopping.step == 1  # the second step was under way at 1 s and is dropped
    assert time.perf_counter() - started < 1.0 + 0.5 + 1.0  # the limit, a look, the save and grid
    assert load_run(tmp_path / "run", "cpu").step == 1


def test_a_grid_is_drawn_by_time_as_well_as_by_steps(tmp_path, monkeypatch):
    # Each step is made to take 20 ms of training time: a grid is due every 0.1 s, so after
    # about every 5 steps, while the step interval alone would draw none before the end.
    from genstudio.core.runtime import training

    real_step = Trainer._train_step

    def slow_step(self, x, labels):
        time.sleep(0.02)
        return real_step(self, x, labels)

    monkeypatch.setattr(Trainer, "_train_step", slow_step)
    by_time = dataclasses.replace(TINY, steps=30, sample_every=0, checkpoint_every=0, sample_seconds=0.1)
    started = time.perf_counter()
    grids = [e.step for e in _run(by_time, tmp_path / "timed") if isinstance(e, SamplesReady)]
    elapsed = time.perf_counter() - started
    assert len(grids) >= 3 and grids[-1] == 30  # mid-run grids (≥ 0.6 s of steps), then the final one
    assert len(grids) - 1 <= elapsed / 0.1 + 1  # no more than one per interval
    assert grids == sorted(set(grids))
    untimed = dataclasses.replace(by_time, sample_seconds=0.0)
    assert [e.step for e in _run(untimed, tmp_path / "untimed") if isinstance(e, SamplesReady)] == [30]
    with pytest.raises(training.RunError, match="sample_seconds"):
        _run(dataclasses.replace(by_time, sample_seconds=-1.0), tmp_path / "bad")


def test_the_end_of_run_work_reports_its_progress(tmp_path):
    # The final grid and evaluation can take minutes with no step to show (a PixelCNN samples
    # pixel by pixel): whoever drives the loop hears how far each has got.
    from genstudio.core.families import family_class
    from genstudio.core.runtime.training import FINAL_SAMPLES

    heard = []
    control = TrainingControl(on_progress=lambda *report: heard.append(report))
    settings = dataclasses.replace(TINY, family="pixelcnn", size=8, steps=2, sample_every=0, checkpoint_every=0,
                                   family_config=dict(family_class("pixelcnn").TINY), eval_images=16,
                                   eval_samples=16)
    _run(settings, tmp_path / "run", control=control)
    grid = [(done, total) for what, done, total in heard if what == FINAL_SAMPLES]
    assert grid and grid[-1][0] == grid[-1][1] > 1 and [d for d, _ in grid] == sorted(d for d, _ in grid)
    measured = [report for report in heard if report[0].startswith("measuring: ")]
    assert measured[0][1:] == (0, 0)  # a stage starts busy, then counts its images
    assert any(done == total > 0 for _, done, total in measured)
