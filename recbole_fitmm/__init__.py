"""FITMM and multimodal baselines as a RecBole 1.2.1 plugin.

Importing the package applies the compatibility fixes of :mod:`recbole_fitmm.compat` first.
"""

from recbole_fitmm import compat

compat.apply()

from recbole_fitmm.config import Config  # noqa: E402
from recbole_fitmm.quick_start import objective_function, run_recbole_fitmm  # noqa: E402
from recbole_fitmm.utils import get_model, get_trainer  # noqa: E402

__all__ = ["Config", "get_model", "get_trainer", "objective_function", "run_recbole_fitmm"]
__version__ = "0.1.0"
