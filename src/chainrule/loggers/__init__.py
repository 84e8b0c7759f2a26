"""Loggers chainrule configures beyond Lightning's own (see conf/logger/)."""
