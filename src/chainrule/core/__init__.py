"""Foundation used by every layer: user-facing errors, secret redaction, console output. Imports no
other chainrule package."""
