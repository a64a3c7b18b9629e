"""The real pretrained models the tests use live in ``app.real_models`` (``minmo train
demo`` needs them too); this module keeps the tests' import path."""

from app.real_models import FETCH, models_cache_dir, smollm2_folder

__all__ = ["FETCH", "models_cache_dir", "smollm2_folder"]
