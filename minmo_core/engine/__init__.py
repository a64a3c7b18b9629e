"""The conversation engine: joins the model boxes into spoken and typed turns, in its own
worker thread, and reports everything a user experiences as plain dataclass events
(``events``). Qt-free: the window only renders the events and sends commands."""
