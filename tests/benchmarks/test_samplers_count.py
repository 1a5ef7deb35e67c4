"""benchmarks/samplers.py counts the network evaluations per image that a sampler setting costs."""

import pytest

from benchmarks.samplers import network_evaluations
from genstudio.core.families import ImageSpec, create_family, family_class
from genstudio.core.metrics.evaluate import generate_uint8


@pytest.mark.parametrize(("family", "options", "per_image"), [
    ("flow-matching", {"solver": "euler", "steps": 3}, 3),
    ("flow-matching", {"solver": "heun", "steps": 3}, 6),    # two slopes a step
    ("diffusion", {"sampler": "ddim", "steps": 4}, 4),
])
def test_network_evaluations_per_image_are_the_samplers_own(family, options, per_image):
    model = create_family(family, ImageSpec(1, 8), dict(family_class(family).TINY), seed=0)
    with network_evaluations(model) as evaluated:
        generate_uint8(model, 5, seed=0, batch=2, options=model.sample_options(options))  # batches of 2, 2, 1
    assert evaluated[0] == per_image * 5
