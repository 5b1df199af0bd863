"""``stembridge train``: fine-tune MusicGen on a band's own stems (issue 14).

Modules, one concern each, in the order data flows:

- :mod:`.settings`: one run's settings (the command's options) and its result.
- :mod:`.songs`: numpy only: the songs in the data folders (multitracks, our ``song__stem`` names, or mixes
  to separate), each song's tempo and bar 1, and one clear error for each kind of bad data.
- :mod:`.examples`: numpy only: each song cut into bar-aligned segments, and each segment turned into what
  the engine would feed the model for it (the audio prompt, the melody audio, the text) and the target stem.
- :mod:`.tokens`: torch: codec tokens and chroma of the examples, computed once and cached on disk.
- :mod:`.objective`: torch: the loss over the delayed codebooks, built on the delay pattern generation uses.
- :mod:`.setup`: torch: the model made trainable (LoRA adapters through peft, or the whole decoder), the
  optimiser and the learning-rate schedule, the estimate of time and memory.
- :mod:`.checkpoints`: the training state on disk, written atomically; resuming from it.
- :mod:`.loop`: the training loop: steps, accumulation, clipping, validation, checkpoints and samples.
- :mod:`.export`: the result as a model folder the loader reads (merged weights) with its card.
- :mod:`.card`: the card (what was trained on what, how far) and the list of trained models.

Importing this package imports neither torch nor transformers.
"""

from __future__ import annotations
