"""Plumbing the model boxes share: audio files, safe checkpoint loading and the pinned
description of each official release, pinned downloads, the CosyVoice release's yaml,
where model folders live and which device runs them."""
