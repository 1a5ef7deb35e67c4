"""run_evaluation: the closest sample/training pairs are real nearest neighbours, stages are
reported, and a cancel stops it cleanly."""

import numpy as np
import pytest

from genstudio.core.data import load_source
from genstudio.core.families import ImageSpec, create_family
from genstudio.core.metrics.evaluate import (
    EvalSettings,
    EvaluationCancelled,
    generate_uint8,
    pairs_strip,
    reference_split,
    run_evaluation,
)


@pytest.fixture(scope="module")
def data():
    return load_source("builtin:tins", 16, 3)


@pytest.fixture
def family(data):
    spec = ImageSpec(channels=3, size=16, num_classes=0)
    return create_family("vae", spec, {"base_channels": 4, "latent_dim": 3}, seed=1)


def test_closest_pairs_are_the_true_nearest_training_images(family, data):
    stages = []
    settings = EvalSettings(metrics=("memorisation",), samples=40, reference=50, seed=5)
    result = run_evaluation(family, data, settings, stage=stages.append, closest=6)
    assert stages == ["sampling", "memorisation"]
    pairs = result.closest_pairs
    assert len(pairs) == 6
    samples = generate_uint8(family, 40, seed=5)
    _ref, _labels, train, _split = reference_split(data, 50)
    flat_train = train.reshape(len(train), -1).astype(np.float64)
    for pair in pairs:
        np.testing.assert_array_equal(pair.sample, samples[pair.sample_index])
        np.testing.assert_array_equal(pair.training, train[pair.training_index])
        # Brute force: no training image is closer, and the distance is the RMS on [0, 1].
        d = np.sqrt(((flat_train - samples[pair.sample_index].reshape(-1)) ** 2).mean(axis=1)) / 255
        assert pair.training_index == int(d.argmin())
        assert pair.distance == pytest.approx(d.min(), rel=1e-9)
    assert [p.distance for p in pairs] == sorted(p.distance for p in pairs)
    assert result.figures["memorisation_min"] == pytest.approx(pairs[0].distance)


def test_pairs_strip_puts_samples_above_their_training_images(family, data):
    settings = EvalSettings(metrics=("memorisation",), samples=10, reference=20)
    pairs = run_evaluation(family, data, settings, closest=3).closest_pairs
    strip = pairs_strip(pairs, padding=2)
    assert strip.shape == (2 + 2 * (16 + 2), 2 + 3 * (16 + 2), 3)
    np.testing.assert_array_equal(strip[2:18, 2:18], pairs[0].sample)
    np.testing.assert_array_equal(strip[20:36, 2 + 18:18 + 18], pairs[1].training)
    with pytest.raises(ValueError, match="memorisation"):
        pairs_strip([])


def test_cancel_between_stages_raises_and_leaves_the_model_in_training_mode(family, data):
    stages = []
    settings = EvalSettings(metrics=("memorisation", "fid"), samples=20, reference=20, extractor="offline")

    def stop_after_sampling_started():
        return "sampling" in stages

    with pytest.raises(EvaluationCancelled):
        run_evaluation(family, data, settings, stage=stages.append, should_stop=stop_after_sampling_started)
    assert stages == ["sampling"]
    assert all(net.training for net in family.networks().values())


def test_counts_report_sampling_and_feature_progress(family, data):
    counts = []
    settings = EvalSettings(metrics=("fid",), samples=30, reference=40, extractor="offline", baseline=False)
    result = run_evaluation(family, data, settings, count=lambda done, total: counts.append((done, total)))
    assert (30, 30) in counts and (40, 40) in counts  # samples made; reference features done
    assert result.closest_pairs == [] and "fid" in result.figures


def test_an_unnormalized_density_is_reported_as_mean_energy_never_as_bits_per_dim():
    import torch

    from genstudio.core.families import family_class
    from genstudio.core.metrics.evaluate import describe_evaluation
    from genstudio.core.trained.likelihood import evaluate_likelihood

    ebm = create_family("ebm", ImageSpec(3, 16), dict(family_class("ebm").TINY))
    images = torch.randint(0, 256, (6, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    figures = evaluate_likelihood(ebm, images, batch=4)
    assert set(figures) == {"energy"}
    ebm.eval_mode()
    with torch.no_grad():
        expected = -ebm.log_prob(images.float() / 255).double().mean().item()
    assert figures["energy"] == pytest.approx(expected, rel=1e-6)
    line = describe_evaluation({**figures, "reference_images": 6, "reference_split": "held-out"})
    assert "bits/dim" not in line and "mean energy" in line


def test_a_hutchinson_estimate_is_reported_with_the_standard_error_of_its_probes():
    """Flow matching on 3×8×8 images (192 numbers: Hutchinson's estimate) gives one column per
    probe; the figure is their mean over probes and images, its standard error the probes'
    spread, sqrt(Σᵢ Varᵢ / P) / N, in bits/dim; it reaches the headline, the line and Compare."""
    import math

    import torch

    from genstudio.core.families import family_class
    from genstudio.core.metrics.evaluate import _likelihood, describe_evaluation
    from genstudio.core.runs.run import plotted_figures
    from genstudio.core.trained.likelihood import evaluate_likelihood

    tiny = dict(family_class("flow-matching").TINY, likelihood_steps=2)
    model = create_family("flow-matching", ImageSpec(3, 8), tiny, seed=0)
    torch.nn.init.normal_(model.ema.average.out[-1].weight, std=0.05)  # a field whose divergence varies
    images = torch.randint(0, 256, (6, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    figures = evaluate_likelihood(model, images)  # one batch, as _likelihood below
    model.eval_mode()
    columns = model.likelihood_bounds(images.float() / 255)["cnf_est"].double()
    model.train_mode()
    probes, dims = model.config.likelihood_probes, 3 * 8 * 8
    assert columns.shape == (6, probes) and figures["cnf_est_probes"] == probes
    assert figures["cnf_est_bpd"] == pytest.approx(-columns.mean().item() / (dims * math.log(2)), rel=1e-9)
    expected_se = math.sqrt((columns.var(dim=1) / probes).sum().item()) / 6 / (dims * math.log(2))
    assert expected_se > 0 and figures["cnf_est_bpd_se"] == pytest.approx(expected_se, rel=1e-9)
    assert set(plotted_figures(figures)) == {"cnf_est_nats", "cnf_est_bpd"}  # not curves of their own

    reference = images.permute(0, 2, 3, 1).numpy()
    out = _likelihood(model, reference, np.zeros(6, dtype=np.int64), reference)
    assert out["eval_bpd"] == figures["cnf_est_bpd"] and out["eval_bpd_se"] == figures["cnf_est_bpd_se"]
    assert out["bpd_kind"] == "exact estimate"
    line = describe_evaluation({**out, "reference_images": 6, "reference_split": "held-out"})
    assert f"cnf_est {figures['cnf_est_bpd']:.3f} ± {expected_se:.2g} (s.e., {probes} probes) bits/dim" in line

    quick = evaluate_likelihood(model, images, quick=True)  # two probes, the fewest with a spread
    assert quick["cnf_est_probes"] == 2 and quick["cnf_est_bpd_se"] > 0


def test_too_few_images_are_refused_with_a_sentence_naming_the_count_that_is_short():
    from genstudio.core.metrics.evaluate import EvalSettings, _check_enough_images, minimum_images

    asked = EvalSettings(metrics=("fid", "precision", "recall"), samples=1000, reference=1000)
    with pytest.raises(ValueError, match="precision and recall need at least 4 reference images.*held-out split has 2"):
        _check_enough_images({"fid", "precision", "recall"}, 2, "held-out", asked)
    too_few = EvalSettings(metrics=("fid", "precision", "recall"), samples=1000, reference=2)
    with pytest.raises(ValueError, match="need at least 4 reference images .*; 2 were asked for"):
        _check_enough_images({"fid", "precision", "recall"}, 2, "held-out", too_few)  # not the split's fault
    few_samples = EvalSettings(metrics=("fid", "recall"), samples=3, reference=1000)
    with pytest.raises(ValueError, match="fid and recall need at least 4 samples; 3 were asked for"):
        _check_enough_images({"fid", "recall"}, 600, "held-out", few_samples)
    _check_enough_images({"fid", "kid", "bpd"}, 2, "held-out", EvalSettings(samples=2, reference=2))
    _check_enough_images({"precision", "recall", "density", "coverage"}, 6, "held-out", asked)
    assert minimum_images({"fid", "kid"}) == 2 and minimum_images({"fid", "recall"}) == 4
    assert minimum_images({"coverage", "precision"}) == 6 and minimum_images(()) == 2


def test_the_summary_line_names_kid_and_the_counts_of_every_figure():
    from genstudio.core.metrics.evaluate import describe_evaluation

    line = describe_evaluation({"elbo_bpd": 4.3, "reference_images": 600, "reference_split": "held-out",
                                "samples": 1000, "fid": 22.04, "kid": 0.0051, "precision": 0.29, "recall": 0.44,
                                "extractor": "inception-v3"})
    assert line.startswith("On 600 held-out images: elbo 4.300 bits/dim")
    assert "FID 22.0, KID×10³ 5.1, precision 0.29, recall 0.44 (1000 samples against the 600 held-out images" in line
