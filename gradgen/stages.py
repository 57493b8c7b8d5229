"""The pipeline's stages, by name: what `gradgen generate --dump STAGE` can print.

A module of its own, importing nothing, so that the CLI can offer the choice without
importing the pipeline (and sympy) behind it.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """A stage of `pipeline.generate`, in the order the pipeline runs them."""

    SPEC = "spec"
    GRAPH = "graph"
    DERIVATION = "derivation"
    LOWERED = "lowered"
    EXPLANATION = "explanation"
    RENDERED = "rendered"
    MODULE = "module"


class Format(StrEnum):
    """What `gradgen explain --format` writes."""

    MARKDOWN = "markdown"
    HTML = "html"


class DType(StrEnum):
    """`--dtype`: what the module computes in."""

    FLOAT64 = "float64"
    FLOAT32 = "float32"


class Backend(StrEnum):
    """`--backend`: what the module is written against."""

    NUMPY = "numpy"
    ARRAY_API = "array-api"
