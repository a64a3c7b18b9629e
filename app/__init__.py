"""MinMo Assistant's desktop application (Qt). Models live in ``minmo_core``."""
