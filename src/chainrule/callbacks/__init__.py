"""Lightning callbacks, one concern each; every callback chainrule adds to a run lives here."""
