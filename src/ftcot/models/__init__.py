"""Local models: resolve a spec to a model + tokenizer, and generate text in batches.

Shared by the ``hf`` teacher backend, student training and evaluation. Needs
the ``hf`` extra (torch, transformers); torch is imported on first use.
"""

from __future__ import annotations

from ftcot.models.generation import Generation, GenerationRequest, generate
from ftcot.models.loading import BUILTIN_MODELS, DTYPES, LoadedModel, load_model, models_cache_dir

__all__ = ["BUILTIN_MODELS", "DTYPES", "Generation", "GenerationRequest", "LoadedModel", "generate", "load_model",
           "models_cache_dir"]
