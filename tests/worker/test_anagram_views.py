"""The door (core/kinds/anagram.py, torch-free) and the views (models/views.py) keep their own tables of which view
takes which arguments and with what defaults; here they agree: a request's filled-in arguments make the default view."""

import pytest
import torch

from core.kinds.anagram import VIEW_ARGS, AnagramJob
from models.views import PARAMS, VIEWS
from worker.anagram import anagram_views


def test_the_door_and_the_views_name_the_same_arguments_for_each_view() -> None:
    assert VIEW_ARGS.keys() == PARAMS.keys()
    assert all(set(VIEW_ARGS[name].model_fields) == PARAMS[name] for name in PARAMS)


@pytest.mark.parametrize("side", [28, 64])
@pytest.mark.parametrize("name", sorted(VIEWS))
def test_a_request_without_arguments_makes_each_default_view(name: str, side: int) -> None:
    body = {"kind": "anagram", "model": "mnist-flow", "prompts": ["1", "2"], "views": ["identity", name]}
    view = anagram_views(AnagramJob.model_validate(body), side)[1]
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(5))
    assert torch.equal(view.view(x), VIEWS[name].view(x))
