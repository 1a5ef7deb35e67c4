"""The window's panels: each receives data and emits intent signals; none computes."""

from .comparison import ComparisonView
from .dataset_panel import DatasetPanel
from .family_picker import FamilyPicker
from .gallery import Gallery
from .inpainting import InpaintPanel
from .latent_explorer import LatentExplorer
from .metrics_plot import MetricsPlot
from .playground import PlaygroundPanel
from .training_panel import TrainingPanel

__all__ = ["ComparisonView", "DatasetPanel", "FamilyPicker", "Gallery", "InpaintPanel", "LatentExplorer", "MetricsPlot", "PlaygroundPanel",
           "TrainingPanel"]
