"""Views: they render what they are given and hold no model or audio."""
