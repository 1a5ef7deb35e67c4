"""The yardsticks every family is measured with, Qt-free.

    likelihood   bits/dim on held-out images (genstudio.core.trained.likelihood) + baseline.PixelCategorical
    features     FeatureExtractor: Inception-v3 pool3 when its weights are present, else an
                 offline random-conv extractor; every figure names its extractor
    fid / kid    Fréchet distance and kernel inception distance of feature sets
    prdc         precision/recall (Kynkäänniemi 2019) and density/coverage (Naeem 2020)
    memorisation nearest training image of each sample
    evaluate     all of the above for a trained run
"""

from .baseline import PixelCategorical, uniform_bits_per_dim
from .download import DownloadCancelled, DownloadError, download_file, sha256_of
from .features import (
    FeatureExtractor,
    InceptionExtractor,
    InvalidWeightsError,
    RandomConvExtractor,
    download_inception,
    find_inception,
    get_extractor,
)
from .fid import feature_statistics, fid_from_features, frechet_distance
from .kid import kid as kernel_inception_distance  # not "kid": that would shadow the module
from .memorisation import MemorisationReport, memorisation_report
from .prdc import density_coverage, precision_recall

__all__ = [
    "DownloadCancelled", "DownloadError", "FeatureExtractor", "InceptionExtractor", "InvalidWeightsError",
    "MemorisationReport", "PixelCategorical", "RandomConvExtractor", "density_coverage", "download_file",
    "download_inception", "feature_statistics", "fid_from_features", "find_inception", "frechet_distance",
    "get_extractor", "kernel_inception_distance", "memorisation_report", "precision_recall", "sha256_of", "uniform_bits_per_dim",
]
