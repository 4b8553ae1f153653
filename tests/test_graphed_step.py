"""``--cuda-graph``: the graph-ready training step (batch indices drawn into a static tensor, gather, forward, loss,
backward, clipping, fused AdamW with its learning rate a device tensor) computes what the ordinary step computes. On
CPU it runs eagerly, as the function a CUDA graph captures; the comparison is within float tolerance (the fused AdamW
and a float32 learning rate round differently from the default AdamW)."""

from __future__ import annotations

import pytest
import torch

from factories import make_dt, make_frozen_dt
from frozen_dt.errors import FrozenDTError
from frozen_dt.sequence_models import SequenceConfig, SequenceModelAlgorithm
from test_sync_free import ACT, K, OBS, SyncForbidden, sampler, step_counters, tiny_slice  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(kind: str, body, cuda_graph: bool) -> SequenceModelAlgorithm:
    torch.manual_seed(0)
    model = make_frozen_dt(body, OBS, ACT, context=K) if kind == "frozen-dt" else make_dt(OBS, ACT, context=K)
    config = SequenceConfig(batch_size=8, warmup_steps=3, lr=1e-3)
    return SequenceModelAlgorithm(model, sampler(0), config, cuda_graph=cuda_graph)


@pytest.mark.parametrize("kind", ["frozen-dt", "dt"])
def test_the_graph_ready_step_computes_the_ordinary_step(tiny_slice, kind):
    ordinary, graphed = build(kind, tiny_slice, False), build(kind, tiny_slice, True)
    assert graphed.sample_batch(None) is None  # the step draws its own batch
    for step in range(6):
        torch.manual_seed(100 + step)  # dropout
        a = ordinary.update(ordinary.sample_batch(None))
        torch.manual_seed(100 + step)
        b = graphed.update(graphed.sample_batch(None))
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-12)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert graphed.graphed.calls == 6 and graphed.graphed.graph is None  # eager on CPU
    for p, q in zip(ordinary.params, graphed.params):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(p, q) for p, q in zip(build(kind, tiny_slice, False).params, graphed.params))


def test_the_graph_ready_step_never_synchronises_and_resumes(tiny_slice):
    graphed = build("frozen-dt", tiny_slice, True)
    graphed.update(None)
    with SyncForbidden(step_counters([graphed])):
        graphed.train_step(None)
    state = graphed.state_dict()
    resumed = build("frozen-dt", tiny_slice, True)
    resumed.load_state_dict(state)
    assert isinstance(resumed.optimizer.param_groups[0]["lr"], torch.Tensor)
    torch.manual_seed(5)
    a = graphed.update(None)
    torch.manual_seed(5)
    b = resumed.update(None)
    assert a == b


def test_the_graph_ready_step_needs_device_sampling(tiny_slice):
    from frozen_dt.data.views import SequenceView

    host = sampler(0)
    view = SequenceView.__new__(SequenceView)
    view.obs_stats = host.obs_stats
    with pytest.raises(FrozenDTError, match="device"):
        SequenceModelAlgorithm(make_dt(OBS, ACT, context=K), view, SequenceConfig(batch_size=8), cuda_graph=True)


def test_graph_ready_seeds_in_a_stack_each_replay_their_own_step(tiny_slice):
    """With ``--seeds``, each graph-ready seed runs (on cuda: replays) its own step: the stack's rows are each seed's
    step alone."""
    from contextlib import nullcontext

    together = [build("frozen-dt", tiny_slice, True) for _ in range(2)]
    alone = [build("frozen-dt", tiny_slice, True) for _ in range(2)]
    torch.manual_seed(7)
    rows = SequenceModelAlgorithm.train_stack(together, [None, None], [nullcontext] * 2)
    torch.manual_seed(7)
    expected = [a.train_step(None) for a in alone]
    assert len(rows) == 2
    for row, e in zip(rows, expected):
        assert row == e
    assert [a.graphed.calls for a in together] == [1, 1]
