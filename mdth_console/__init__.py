"""mdth operations console (Textual). Talks only to ``mdth_engine``'s public facade."""
