import os
import socket

import torch
import torch.multiprocessing as mp

from cleanpose.engine import distributed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, results) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    distributed.init_from_environment("cpu")
    local = torch.arange(6, dtype=torch.float64).reshape(3, 2) + 100 * rank
    gathered = distributed.all_gather_concat(local)
    mean = distributed.all_reduce_mean(local)
    results[rank] = (distributed.get_rank(), distributed.get_world_size(), gathered, mean, local)
    torch.distributed.destroy_process_group()


def test_single_process_is_rank_zero_of_one():
    value = torch.randn(4, 3)
    assert (distributed.get_rank(), distributed.get_world_size(), distributed.is_main_process()) == (0, 1, True)
    assert distributed.all_gather_concat(value) is value
    torch.testing.assert_close(distributed.all_reduce_mean(value), value)


def test_two_gloo_ranks_gather_in_rank_order_and_average():
    manager = mp.get_context("spawn").Manager()
    results = manager.dict()
    mp.start_processes(_worker, args=(2, _free_port(), results), nprocs=2, start_method="spawn")
    expected_gathered = torch.cat([results[0][4], results[1][4]])
    expected_mean = (results[0][4] + results[1][4]) / 2
    for rank in (0, 1):
        got_rank, world_size, gathered, mean, _ = results[rank]
        assert (got_rank, world_size) == (rank, 2)
        torch.testing.assert_close(gathered, expected_gathered, rtol=0, atol=0)
        torch.testing.assert_close(mean, expected_mean, rtol=0, atol=0)
