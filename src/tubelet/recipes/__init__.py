"""One readable function per job, called by the CLI and usable from Python."""
