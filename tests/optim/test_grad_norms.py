"""Norms and clipping of sharded gradients equal one process's on the same model and batch: FSDP (a 2x1
mesh) and tensor parallelism (1x2) on two gloo ranks (tests.support.gloo)."""

import math

import pytest
import torch
from torch.nn import functional as F

from chainrule.models.gpt import GPT
from chainrule.optim.grad_norms import clip_grad_norm_, step_total_norm, total_norm
from tests.support.gloo import on_gloo_ranks

MAX_NORM = 0.05  # well below the norms here: clipping scales every gradient


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT((16,), 32, n_layer=2, n_head=4, n_embd=32, dropout=0.0, bias=True)


def batch() -> torch.Tensor:
    return torch.randint(0, 32, (4, 16), generator=torch.Generator().manual_seed(1))


def backward(model: GPT, idx: torch.Tensor) -> None:
    logits = model(idx)
    F.cross_entropy(logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten()).backward()


def one_process() -> dict:
    model = tiny_gpt()
    backward(model, batch())
    grads = [p.grad for p in model.parameters()]
    result = {"norm": torch.nn.utils.get_total_norm(grads),
              "inf": torch.nn.utils.get_total_norm(grads, math.inf)}
    result["returned"] = clip_grad_norm_(model.parameters(), MAX_NORM)
    result["clipped"] = {name: p.grad.clone() for name, p in model.named_parameters()}
    return result


def sharded(rank: int, world: int) -> dict:
    from torch.distributed.device_mesh import init_device_mesh

    from chainrule.training.parallelize import DATA_PARALLEL, TENSOR_PARALLEL, parallelize

    results = {}
    for dp, tp in ((2, 1), (1, 2)):
        mesh = init_device_mesh("cpu", (dp, tp), mesh_dim_names=(DATA_PARALLEL, TENSOR_PARALLEL))
        model = tiny_gpt()
        parallelize(model, mesh, mixed_precision=None, activation_checkpointing=False, cpu_offload=False,
                    reshard_after_forward=True)
        idx, shard = batch(), mesh[DATA_PARALLEL].get_local_rank()
        backward(model, idx.chunk(dp)[shard])  # FSDP averages the data-parallel ranks' gradients
        grads = [p.grad for p in model.parameters()]
        result = {"norm": total_norm(grads), "inf": total_norm(grads, math.inf)}
        result["returned"] = clip_grad_norm_(model.parameters(), MAX_NORM)
        result["clipped"] = {name: p.grad.full_tensor() for name, p in model.named_parameters()}
        results[f"{dp}x{tp}"] = result
    return results


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    return on_gloo_ranks(sharded, 2)


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["2x1", "1x2"])
def test_the_global_norm_and_clipping_of_sharded_gradients_are_one_process_s(ranks: list[dict],
                                                                              mesh: str) -> None:
    expected = one_process()
    assert expected["norm"] > 10 * MAX_NORM
    for result in (r[mesh] for r in ranks):
        assert result["norm"] == pytest.approx(expected["norm"].item(), rel=1e-6)
        assert result["inf"] == pytest.approx(expected["inf"].item(), rel=1e-6)
        assert torch.equal(result["returned"], result["norm"])
        for name, grad in expected["clipped"].items():
            # atol: some gradients are zero up to rounding (a key bias shifts all of a query's scores alike)
            torch.testing.assert_close(result["clipped"][name], grad, rtol=1e-4, atol=1e-9, msg=name)
    # Every rank scales by the same factor: the norm is identical everywhere, not merely close.
    assert torch.equal(ranks[0][mesh]["norm"], ranks[1][mesh]["norm"])


def test_plain_tensors_take_torch_s_own_path_bit_for_bit() -> None:
    model = tiny_gpt()
    backward(model, batch())
    grads = [p.grad.clone() for p in model.parameters()]
    assert torch.equal(total_norm(grads), torch.nn.utils.get_total_norm(grads))
    reference = tiny_gpt()
    backward(reference, batch())
    assert torch.equal(clip_grad_norm_(model.parameters(), MAX_NORM),
                       torch.nn.utils.clip_grad_norm_(reference.parameters(), MAX_NORM))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(model.parameters(), reference.parameters()))


def test_one_step_computes_the_total_norm_once_and_clipping_reuses_it_bit_for_bit() -> None:
    model, reference = tiny_gpt(), tiny_gpt()
    backward(model, batch())
    backward(reference, batch())
    grads = [p.grad for p in model.parameters()]
    guard_norm = step_total_norm(grads, step=7)  # the guard, before the update
    assert step_total_norm(grads, step=7) is guard_norm  # the same gradients in the same step: reused
    clipped = clip_grad_norm_(model.parameters(), MAX_NORM, step=7)  # clipping right after
    assert clipped is guard_norm
    assert torch.equal(clipped, torch.nn.utils.clip_grad_norm_(reference.parameters(), MAX_NORM))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(model.parameters(), reference.parameters()))
    # Clipped in place, the gradients are no longer those the norm was taken of: computed anew.
    assert not torch.equal(step_total_norm(grads, step=7), guard_norm)
    assert step_total_norm(grads, step=8) is not step_total_norm(grads, step=7)  # another step: anew
