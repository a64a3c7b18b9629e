"""MinMo model components: front end, encoders, projectors, LLM, voice decoder, CLI.

Nothing in this package imports Qt; the GUI lives in ``app``.
"""

__version__ = "0.1.0"
