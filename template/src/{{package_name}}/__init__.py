"""A trainer project generated from the trainwright template; ``python -m`` this package to train."""
