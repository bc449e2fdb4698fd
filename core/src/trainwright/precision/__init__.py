"""Precision formats: one class per ``precision=`` value."""

from trainwright.precision.base import Precision
from trainwright.precision.mixed import BF16MixedPrecision, FP16MixedPrecision
from trainwright.precision.true import BF16TruePrecision, DoublePrecision

PRECISION_CLASSES: dict[str, type[Precision]] = {
    cls.name: cls for cls in (Precision, DoublePrecision, BF16MixedPrecision, FP16MixedPrecision, BF16TruePrecision)
}

__all__ = [
    "PRECISION_CLASSES",
    "BF16MixedPrecision",
    "BF16TruePrecision",
    "DoublePrecision",
    "FP16MixedPrecision",
    "Precision",
]
