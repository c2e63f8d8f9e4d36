"""Inference backends behind the Predictor: each maps a normalised-size RGB batch to raw head outputs."""

from .backend import Backend, BackendConfig, create_backend, describe_artefact, resolve_backend_name

__all__ = ["Backend", "BackendConfig", "create_backend", "describe_artefact", "resolve_backend_name"]
