"""Which jobs may share a batch (worker/batching.batch_key): a pure rule, checked on its own."""

from worker.batching import batch_key

SHIPPED = {"mnist-ddpm", "mnist-flow"}
BASE = {"kind": "sample", "model": "mnist-ddpm", "steps": 50, "guidance_scale": 5.0, "n": 4, "seed": 1}


def key(owner: str = "a", **changes: object) -> object:
    return batch_key({**BASE, "prompt": "3", **changes}, owner, SHIPPED)


def test_what_is_each_jobs_own_does_not_split_a_batch():
    assert key() == key(prompt="7") == key(prompt=None, class_label=2) == key(seed=9, n=1, frames=True)
    assert key() == key(owner="b")  # a shipped model is the same network for every caller
    assert key() == key(webhook="http://127.0.0.1:9/hook", webhook_events=["start", "completed"])  # each job's own


def test_what_the_loop_shares_does():
    for changes in ({"steps": 20}, {"stride": 10}, {"guidance_scale": 2.0}, {"guidance_interval": [0.0, 0.8]}):
        assert key(**changes) != key(), changes
    assert key(model="mnist-flow") != key()
    assert key(clip_denoised=True) != key()
    assert key(prompt=None) != key()  # unconditional: one branch, not CFG's two


def test_a_trained_model_batches_only_with_its_owners_jobs():
    assert key(owner="a", model="mine") != key(owner="b", model="mine")
    assert key(owner="a", model="mine") == key(owner="a", model="mine", seed=3)


def test_only_sample_jobs_without_stage_two_are_batched():
    assert key(upsample=True) is None
    assert batch_key({**BASE, "kind": "inpaint"}, "a", SHIPPED) is None
