"""The model manager: packs of official releases, verified downloads, local imports and the
memory planner. Qwen-free and Qt-free; the command line and the window both use it."""
