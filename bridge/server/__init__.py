"""The daemon: the OSC contract (protocol), UDP and TCP endpoints (osc, tcp), request handling, lifecycle."""
