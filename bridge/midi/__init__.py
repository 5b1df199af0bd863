"""Notes as MIDI: parts as note lists on a tempo grid, Standard MIDI Files, and transcription of audio parts.

- :mod:`.notes`: :class:`~bridge.midi.notes.Note` (in samples) and :class:`~bridge.midi.notes.Part` (notes, grid,
  length); sample <-> tick conversion.
- :mod:`.smf`: a part to and from a Standard MIDI File, through mido (imported only when a file is made or read).
- :mod:`.transcribe`: audio parts to notes (monophonic lines, drums, chords); pure functions on arrays.
- :mod:`.files`: the file-level edge: ``.mid`` files beside a job's audio, and ``stembridge transcribe``.
"""
