"""The ``musicgen`` engine: MusicGen conditional stem generation and variation on transformers.

Modules, one concern each:

- :mod:`.engine`: :class:`MusicgenEngine`, the engine the registry names (routing, options, the loaded model).
- :mod:`.loading`: which weights a model name means (a folder, ``<models-dir>/<name>/``, the Hugging Face
  cache), cheap presence checks, loading, and ``stembridge models pull``.
- :mod:`.conditioning`: numpy only: the text prompt, the context as a loop, the plan of generation windows
  on the bar grid, and stitching the windows back into one part.
- :mod:`.sampling`: torch: one batch of rows: prompts encoded, decoded by :mod:`.decoding`, codes to audio.
- :mod:`.decoding`: our decoding loop over the model's public forward pass: the codebook delay pattern,
  classifier-free guidance, top-k sampling with a generator per row, one prefill per distinct prompt, melody
  chroma, progress and cancel per step.
- :mod:`.sampler`: torch only: the sampling settings and per-row seeds (the audiocraft engine uses it too).
- :mod:`.isolation`: the target stem out of the generated mix with the demucs engine, when it is there.
- :mod:`.convert` and :mod:`.convert_encodec`: audiocraft fine-tuning checkpoints to the transformers format.
- :mod:`.audiocraft_engine`: the ``audiocraft`` engine, for environments where audiocraft itself imports.

Importing this package imports neither torch nor transformers.
"""

from __future__ import annotations
