"""Audio I/O, timing (bars <-> samples), analysis and post-processing."""
