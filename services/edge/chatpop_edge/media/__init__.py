"""Content checks of uploaded media (photo, voice, video), run in worker processes off the event loop."""
