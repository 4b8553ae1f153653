"""A training step of the sequence models never waits for the device.

On an accelerator a host synchronisation (``.item()``, Python ``bool()`` of a tensor, boolean-mask indexing whose
result size only the device knows) stalls the step. On CPU nothing stalls, so these tests run a whole step - the
device sampler's batch, forward through a frozen slice with left-padded windows, masked loss, backward, clipping,
AdamW, schedule - under a dispatch mode that fails on every operation that would synchronise on a device. The only
exemption is AdamW's step counter: a host tensor on a GPU too (not capturable), so reading it costs no sync.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch

from factories import make_dt, make_frozen_dt, sequence_algorithm
from frozen_dt.backbones.slice import _transformers, load_backbone
from frozen_dt.data.dataset import from_flat_arrays
from frozen_dt.data.views import DeviceSampler, SequenceView
from frozen_dt.sequence_models import SequenceModelAlgorithm, masked_mean
from frozen_dt.training.sync_check import DispatchCounter, HostSync, optimizer_step_counters

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OBS, ACT, K = 5, 3, 4


def SyncForbidden(exempt: set[int] = frozenset()) -> DispatchCounter:  # noqa: N802 - reads as the mode it is
    """Raises on every op that would make the host wait for a device (``exempt``: data pointers of host tensors)."""
    return DispatchCounter(exempt, strict=True)


@pytest.fixture(scope="module")
def tiny_slice(tmp_path_factory):
    """A tiny Gemma 3 (sliding and full attention layers) as a frozen slice."""
    transformers = _transformers()
    torch.manual_seed(0)
    config = transformers.Gemma3TextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        head_dim=8, vocab_size=11, sliding_window=5, layer_types=["sliding_attention", "full_attention"])
    path = tmp_path_factory.mktemp("tiny-gemma3")
    transformers.AutoModel.from_config(config).save_pretrained(path)
    return load_backbone(f"hf:{path}", "0:2")


def sampler(seed: int = 0) -> DeviceSampler:
    """Episodes of 3 and 9 steps: with K=4 many windows are left-padded."""
    rng = np.random.default_rng(seed)
    n = 12
    terminals = np.zeros(n, bool)
    terminals[[2, 11]] = True
    data = from_flat_arrays(rng.normal(size=(n, OBS)), rng.uniform(-1, 1, size=(n, ACT)), rng.uniform(0, 1, size=n),
                            terminals, where="synthetic")
    return DeviceSampler(SequenceView(data, K), "cpu", seed)


def step_counters(algorithms) -> set[int]:
    return optimizer_step_counters([a.optimizer for a in algorithms])


def algorithm(model, seed: int = 0):
    return sequence_algorithm(model, sampler(seed), batch_size=8, warmup_steps=3)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["frozen-dt", "dt"])
def test_a_training_step_never_synchronises(tiny_slice, kind, precision):
    torch.manual_seed(0)
    model = make_frozen_dt(tiny_slice, OBS, ACT, context=K) if kind == "frozen-dt" else make_dt(OBS, ACT, context=K)
    algo = algorithm(model)
    algo.precision = precision
    algo.train_step(algo.sample_batch(None))  # AdamW creates its state on the first step
    before = [p.detach().clone() for p in algo.params]
    with SyncForbidden(step_counters([algo])):
        for _ in range(2):
            out = algo.train_step(algo.sample_batch(None))
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["grad_norm"])
    assert any(not torch.equal(b, p) for b, p in zip(before, algo.params))


@pytest.mark.parametrize("kind", ["frozen-dt shared slice", "dt vmapped"])
def test_a_stacked_training_step_never_synchronises(tiny_slice, kind):
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(make_frozen_dt(tiny_slice, OBS, ACT, context=K) if kind.startswith("frozen")
                      else make_dt(OBS, ACT, context=K))
    algorithms = [algorithm(m, seed) for seed, m in enumerate(models)]
    rngs = [nullcontext] * 3
    SequenceModelAlgorithm.train_stack(algorithms, [a.sample_batch(None) for a in algorithms], rngs)
    with SyncForbidden(step_counters(algorithms)):
        out = SequenceModelAlgorithm.train_stack(algorithms, [a.sample_batch(None) for a in algorithms], rngs)
    assert all(torch.isfinite(m["loss"]) for m in out)


def test_the_mode_catches_what_synchronises():
    x = torch.randn(4, 3)
    for sync in (lambda: float(x.sum()), lambda: bool(x.sum() > 0), lambda: x[x > 0], lambda: x.nonzero()):
        with SyncForbidden(), pytest.raises(HostSync, match="host synchronisation|boolean-mask"):
            sync()
    with DispatchCounter() as counter:
        float(x.sum())
        x[x > 0]
    assert counter.syncs == 2 and counter.ops >= 4


def test_the_action_loss_is_the_mean_over_the_real_steps():
    g = torch.Generator().manual_seed(0)
    predicted, actions = torch.randn(3, K, ACT, generator=g), torch.randn(3, K, ACT, generator=g)
    mask = torch.tensor([[False, False, True, True], [True] * K, [False, False, False, True]])
    total, count = 0.0, 0
    for b in range(3):
        for k in range(K):
            if mask[b, k]:
                for a in range(ACT):
                    total += float(predicted[b, k, a] - actions[b, k, a]) ** 2
                    count += 1
    algo = SequenceModelAlgorithm.__new__(SequenceModelAlgorithm)
    loss = algo.action_loss(predicted, {"actions": actions, "mask": mask})
    assert float(loss) == pytest.approx(total / count, rel=1e-6)
    assert float(loss) == pytest.approx(float(((predicted - actions) ** 2)[mask].mean()), rel=1e-6)  # the old form
    assert float(masked_mean(torch.ones(2, 2, 7), torch.tensor([[True, False], [False, False]]))) == 1.0


def test_the_probe_loss_and_error_are_the_means_over_the_counted_bits():
    from frozen_dt.probes.tasks import Batch
    from frozen_dt.probes.train import loss_and_error

    class Logits(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.nn.Parameter(logits)

        def forward(self, x):
            return self.logits

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 3, generator=g)
    targets = (torch.rand(2, 5, 3, generator=g) > 0.5).float()
    mask = torch.tensor([[False, True, True, False, True], [True, False, False, False, False]])
    loss, error = loss_and_error(Logits(logits), Batch(np.zeros((2, 5, 1), np.float32), targets.numpy(), mask.numpy()))
    picked, wanted = logits[mask], targets[mask]  # the old form: the counted rows selected
    expected = torch.nn.functional.binary_cross_entropy_with_logits(picked, wanted)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert float(error) == pytest.approx(float(((picked > 0).float() != wanted).float().mean()), rel=1e-6)
