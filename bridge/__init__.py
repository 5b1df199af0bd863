"""stembridge: a local inference daemon that separates, generates and varies stems for DAWs."""

__version__ = "0.1.0"
