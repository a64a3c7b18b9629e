"""The desktop window (PySide6 + qasync). Widgets only render engine events and send it
commands; models load and run in worker threads; nothing here imports torch at import time."""
