"""Jam: the AI bandmate hears the humans' last cycle and answers with its part before the next bar line.

A session cuts the performance into cycles of ``bars`` bars. For each cycle the humans played (sent ``lead``
before its last bar line), it answers with the AI's part for cycle ``k + 1 + lag``, exactly one cycle long on
the sample grid, levelled under the humans and joined to the part before it without a click. A part that is
not ready before its bar line is never played late: it is reported and dropped, and the next cycle goes on.

Modules, one concern each: :mod:`.options` (the settings), :mod:`.clock` (tempo, cycle lengths, deadlines),
:mod:`.hearing` (what the AI hears), :mod:`.seams` (levelling and joining parts), :mod:`.take` (what played,
the whole performance), :mod:`.session` (the loop), :mod:`.player` (a file played as the humans' input),
and on the sound card: :mod:`.duplex` (the stream callback), :mod:`.live` (the session thread beside it),
:mod:`.devices` (sounddevice, imported only there).
"""

from bridge.jam.options import JamOptions
from bridge.jam.session import JamPart, JamSession

__all__ = ["JamOptions", "JamPart", "JamSession"]
