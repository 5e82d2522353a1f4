"""Toy data sets for examples, tutorials, tests and reproductions, generated on the fly
(no downloads): 2-D densities with known entropy, the inverse-kinematics arm and the
Gaussian-mode data sets of the INN papers."""

from . import densities, kinematics, modes
from .densities import *  # noqa: F403
from .kinematics import *  # noqa: F403
from .modes import *  # noqa: F403

__all__ = [*densities.__all__, *kinematics.__all__, *modes.__all__]
