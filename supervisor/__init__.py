"""bbsupervise's master side. Holds no code (see DEVELOPERS.md rule 6)."""
