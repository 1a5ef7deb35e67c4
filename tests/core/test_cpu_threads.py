"""One intra-op thread for the calling thread only: torch's count there is 1 inside the block
and what it was after it, while other threads, those started inside the block included, keep
theirs."""

import threading

import pytest
import torch

from genstudio.core.runtime import cpu_threads
from genstudio.core.runtime.cpu_threads import one_intra_op_thread


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_runtime_is_reachable_here():
    # Where it is not, the block does nothing (only slower): on this Linux wheel it must work.
    assert cpu_threads._function("omp_set_num_threads") is not None
    assert cpu_threads._function("MKL_Set_Num_Threads_Local") is not None


def in_a_thread(function):
    out = []
    thread = threading.Thread(target=lambda: out.append(function()))
    thread.start()
    thread.join()
    return out[0]


def test_one_thread_inside_the_block_and_the_count_back_after(two_threads):
    def counts():
        seen = [torch.get_num_threads()]
        with one_intra_op_thread():
            seen.append(torch.get_num_threads())
            torch.ones(64, 64) @ torch.ones(64, 64)
        seen.append(torch.get_num_threads())
        return seen

    assert counts() == [2, 1, 2]  # the main thread
    assert in_a_thread(counts) == [2, 1, 2]  # a worker


def test_a_threads_first_operation_inside_the_block_does_not_undo_it(two_threads):
    # torch sets a thread's count from its default at the thread's first parallel operation.
    def first_operation_inside():
        with one_intra_op_thread():
            torch.ones(256, 256) @ torch.ones(256, 256)
            return torch.get_num_threads()

    assert in_a_thread(first_operation_inside) == 1


def test_other_threads_keep_their_count_and_so_do_threads_started_meanwhile(two_threads):
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def sampler():
        with one_intra_op_thread():
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=sampler)
    worker.start()
    inside.wait(10)
    seen["main"] = torch.get_num_threads()
    seen["started meanwhile"] = in_a_thread(torch.get_num_threads)
    release.set()
    worker.join()
    assert seen == {"main": 2, "started meanwhile": 2}


def test_the_block_gives_the_thread_back_when_it_raises(two_threads):
    with pytest.raises(RuntimeError), one_intra_op_thread():
        raise RuntimeError("a cancelled sampler")
    assert torch.get_num_threads() == 2
