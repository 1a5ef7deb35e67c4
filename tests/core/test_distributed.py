"""Data-parallel training under torchrun (gloo, 2 CPU processes) against one process.

One torchrun launch (tests/core/dist_worker.py) runs every job, since starting processes is the
slow part: per family, a 2-process run of 4 steps, a 2-process run of 2 steps (resumed here by
one process), and a 2-process resume of a 1-process run of 2 steps. Each rank dumps its weights.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genstudio.core.families import family_class
from genstudio.core.runs.checkpoint import load_checkpoint
from genstudio.core.runs.run import RunDir, TrainSettings
from genstudio.core.runtime.training import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from dist_worker import skip_slow_sampling  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# Exactly equal to one process up to float summation order: every family but the GAN, whose
# generator's BatchNorm takes batch statistics over each process's half of the batch.
# (PixelCNN draws no noise and has no batch coupling: the VAE and diffusion cover its path.)
EXACT = ("vae", "diffusion", "flow", "ebm", "flow-matching")  # flow matching: without transport pairs
FAMILIES = (*EXACT, "gan")
RESUMED = ("vae", "flow", "ebm")  # resume across a change of process count (each costs two runs)
# Largest weight difference allowed after 4 steps. Adam normalises each gradient, so a last-bit
# difference in a near-zero gradient can move a weight by a good part of a step: one process
# against itself with 1 vs 2 torch threads (another summation order) differs by 3e-8 (VAE),
# 5e-8 (diffusion, in warm-up), 1e-8 (EBM) and 8e-6 (the flow at initialisation) — as much as
# two processes against one. Two fewer training steps move the weights by ≥ 1.7e-5.
ATOL = {"vae": 1e-6, "diffusion": 1e-6, "ebm": 1e-6, "flow": 2e-5, "flow-matching": 1e-6}


def _config(family: str) -> dict:
    config = dict(family_class(family).TINY)
    return config


def _settings(family: str, steps: int, seed: int = 3) -> TrainSettings:
    return TrainSettings(
        family=family, data="builtin:tins", size=8, steps=steps, batch=8, seed=seed, device="cpu",
        family_config=_config(family), log_every=2, sample_every=0,
        checkpoint_every=0, grid_samples=1, eval_images=0,
    )


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": t.detach().cpu().clone()
            for name, module in trainer.family.networks().items()
            for key, t in module.state_dict().items()}


def _train(settings: TrainSettings, out: Path, resume: bool = False) -> dict[str, torch.Tensor]:
    trainer = Trainer(settings, str(out), resume=resume)
    skip_slow_sampling(trainer)
    for _event in trainer.run():
        pass
    return _state(trainer)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest difference over float32 weights and buffers. Half-precision buffers (the EBM's
    replay buffer) are checked to their own spacing: a last-bit difference in a negative rounds
    to one step of float16 (≤ 2⁻¹¹ on [−1, 1])."""
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype == torch.float16 and float((a[k].float() - b[k].float()).abs().max()) > 2 ** -10:
            return float("inf")
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0
               for k in a if a[k].is_floating_point() and a[k].dtype != torch.float16)


def _torchrun(jobs: list[dict], tmp: Path, timeout: float = 420) -> None:
    spec = tmp / "jobs.json"
    spec.write_text(json.dumps(jobs))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "core" / "dist_worker.py"), str(spec)]
    # Its own process group, so a hang can be killed with every worker it started.
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{output[-3000:]}")
    # torchrun's own report fills the tail: show the failing rank's lines first (the cause).
    rank0 = "\n".join(line for line in output.splitlines() if line.startswith("[rank0]"))[-4000:]
    assert proc.returncode == 0, f"{rank0}\n...\n{output[-3000:]}"


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Runs the single-process references and the one torchrun launch; returns their paths."""
    tmp = tmp_path_factory.mktemp("ddp")
    os.environ.setdefault("GENSTUDIO_CACHE_DIR", str(tmp / "cache"))
    refs, jobs = {}, []
    for family in FAMILIES:
        refs[family] = _train(_settings(family, 4), tmp / f"{family}-single")
        jobs += [
            {"settings": _settings(family, 4).to_json(), "out": str(tmp / f"{family}-ddp"),
             "resume": False, "dump": str(tmp / "dump" / f"{family}-ddp")},
            {"settings": _settings(family, 2).to_json(), "out": str(tmp / f"{family}-two-then-one"),
             "resume": False, "dump": str(tmp / "dump" / f"{family}-two")},
        ]
        if family in RESUMED:
            _train(_settings(family, 2), tmp / f"{family}-one-then-two")  # resumed by 2 processes
            jobs.append({"settings": _settings(family, 4).to_json(), "out": str(tmp / f"{family}-one-then-two"),
                         "resume": True, "dump": str(tmp / "dump" / f"{family}-resumed")})
    _torchrun(jobs, tmp)
    return tmp, refs


def _ranks(tmp: Path, name: str) -> list[dict]:
    return [torch.load(tmp / "dump" / name / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.parametrize("family", FAMILIES)
def test_replicas_stay_identical_on_both_ranks(launched, family):
    tmp, _ = launched
    for job in ("ddp", "two", "resumed") if family in RESUMED else ("ddp", "two"):
        rank0, rank1 = _ranks(tmp, f"{family}-{job}")
        assert rank0["step"] == rank1["step"] == (2 if job == "two" else 4)
        assert rank0["state"].keys() == rank1["state"].keys()
        for key, value in rank0["state"].items():
            assert torch.equal(value, rank1["state"][key]), f"{family} {job}: {key} differs between ranks"
        assert torch.equal(rank0["generator"], rank1["generator"])


@pytest.mark.parametrize("family", EXACT)
def test_two_processes_equal_one_process_with_the_same_global_batch(launched, family):
    tmp, refs = launched
    rank0, _ = _ranks(tmp, f"{family}-ddp")
    assert _max_diff(rank0["state"], refs[family]) < ATOL[family]
    # The tolerance is far below what two fewer steps of the same run change: the test can fail.
    two_steps_short, _ = _ranks(tmp, f"{family}-two")
    assert _max_diff(two_steps_short["state"], refs[family]) > 3 * ATOL[family]


@pytest.mark.parametrize("family", RESUMED)
def test_resume_across_a_change_of_process_count(launched, family):
    tmp, refs = launched
    # 2 processes to step 2, then 1 process to step 4 (from rank 0's checkpoint)
    resumed_by_one = _train(_settings(family, 4), tmp / f"{family}-two-then-one", resume=True)
    assert _max_diff(resumed_by_one, refs[family]) < ATOL[family]
    # 1 process to step 2, then 2 processes to step 4
    rank0, _ = _ranks(tmp, f"{family}-resumed")
    assert _max_diff(rank0["state"], refs[family]) < ATOL[family]


def test_gan_under_two_processes_stays_close_to_one_process(launched):
    """Not exact (BatchNorm statistics per half-batch), but the same training, not another one."""
    tmp, refs = launched
    rank0, _ = _ranks(tmp, "gan-ddp")
    two_steps_short, _ = _ranks(tmp, "gan-two")
    assert _max_diff(rank0["state"], refs["gan"]) < 0.25 * _max_diff(two_steps_short["state"], refs["gan"])


def test_only_rank_zero_writes_the_run_directory(launched):
    tmp, _ = launched
    run = RunDir(tmp / "vae-ddp")
    records = [r for r in run.read_metrics() if "loss" in r]
    assert [r["step"] for r in records] == [2, 4]  # one record per logged step, not one per rank
    assert sorted(p.name for p in run.path.iterdir()) == [
        ".lock", "checkpoint.json", "checkpoint.safetensors", "config.json", "metrics.jsonl", "samples"]
    assert len(list(run.samples_dir.iterdir())) == 1
    _, meta = load_checkpoint(run.checkpoint_path)
    assert meta["step"] == 4


def test_logged_loss_is_the_global_batch_loss(launched):
    """Rank 0 logs the mean over both halves, i.e. what one process logs for the whole batch."""
    tmp, _ = launched
    two = [r for r in RunDir(tmp / "vae-ddp").read_metrics() if "loss" in r]
    one = [r for r in RunDir(tmp / "vae-single").read_metrics() if "loss" in r]
    assert [r["step"] for r in two] == [r["step"] for r in one]
    for a, b in zip(two, one, strict=True):
        for key in ("loss", "kl", "bpd"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key


def test_a_batch_that_does_not_split_evenly_is_refused(tmp_path):
    from genstudio.core.runs.run import RunError
    from genstudio.core.runtime.distributed import Distributed

    fake = Distributed(rank=0, world_size=3, local_rank=0, backend="gloo")
    with pytest.raises(RunError, match="multiple of the number of processes"):
        Trainer(_settings("vae", 2), str(tmp_path / "run"), distributed=fake)
    assert not (tmp_path / "run").exists()


def test_single_process_is_not_distributed(monkeypatch):
    from genstudio.core.runtime.distributed import Distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert Distributed.from_env("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert Distributed.from_env("cpu") is None


_CLOSE_SCRIPT = """
import json, sys, time
from genstudio.core.runtime.distributed import Distributed, end_process
distributed = Distributed.from_env("cpu", timeout_s=60)
if distributed.rank == 0:
    time.sleep(1.5)  # rank 0's end of a run: the final samples, checkpoint and evaluation
started = time.monotonic()
distributed.close(finished=True)
waited = time.monotonic() - started
with open(f"rank{distributed.rank}.json", "w") as fh:  # not stdout: both ranks' lines interleave there
    json.dump(waited, fh)
end_process(0)
"""


def test_after_a_finished_run_each_process_waits_for_the_others_before_leaving(tmp_path):
    # A gloo process that tore the group down and exited while rank 0 was still at its end-of-run
    # work aborted now and then ("terminate called without an active exception"). Closing after
    # a finished run therefore meets the others first: rank 1 leaves only once rank 0 does.
    script = tmp_path / "close.py"
    script.write_text(_CLOSE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    waited = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert waited[1] > 1.0 and waited[0] < 1.0, waited


_TEARDOWN_PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("teardown ran", flush=True))
sys.argv = ["genstudio", *sys.argv[1:]]
runpy.run_module("genstudio", run_name="__main__")
"""


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_a_torchrun_process_ends_without_the_interpreters_teardown(tmp_path, world_size):
    # Under torchrun, `python -m genstudio` ends with end_process: gloo's worker thread may still
    # release the last collective's tensors, and doing that while the interpreter finalises
    # aborted the process now and then. Its exit code and its output must survive that.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "WORLD_SIZE": world_size}
    out = subprocess.run([sys.executable, "-c", _TEARDOWN_PROBE, "sample", str(tmp_path / "none"), "--n", "1",
                          "--seed", "0", "--out", str(tmp_path / "out")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1  # a user error: the code main() returned
    assert out.stderr.startswith("genstudio: error: ") and "no run at" in out.stderr
    assert ("teardown ran" in out.stdout) == (world_size == "1")


def test_end_process_flushes_what_was_written_and_exits_with_the_code():
    code = ("import atexit, sys\n"
            "from genstudio.core.runtime.distributed import end_process\n"
            "atexit.register(lambda: print('teardown ran'))\n"
            "print('written', end='')\n"
            "sys.stderr.write('said')\n"
            "end_process(3)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout, out.stderr) == (3, "written", "said")
