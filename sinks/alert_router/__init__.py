"""Alert router sink."""
