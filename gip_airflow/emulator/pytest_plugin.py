"""pytest fixtures for the GIP emulator (placeholder until the emulator lands)."""
