"""Our MusicGen decoding loop against transformers' own ``generate`` on tiny real architectures (random weights):
with greedy decoding the tokens must be the same, and so must the audio after the codec; and the loop's own
promises (shared prefill, per-row seeds, exact frames, progress and cancel per step)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from bridge.engines.base import Progress  # noqa: E402
from bridge.engines.musicgen import sampling  # noqa: E402
from bridge.engines.musicgen.decoding import PREFILL_CHUNK, Conditions, Decoder, DelayPattern  # noqa: E402
from bridge.engines.musicgen.engine import MusicgenEngine  # noqa: E402
from bridge.engines.musicgen.loading import LoadedModel  # noqa: E402
from bridge.engines.musicgen.sampler import Sampling, row_seed  # noqa: E402
from bridge.errors import Cancelled  # noqa: E402
from tests import model_fixtures as mf  # noqa: E402

GREEDY = Sampling(top_k=1, guidance_scale=10.0)  # strong guidance: the unconditional half matters
TEXTS = ["solo bass line, 120 bpm, in A minor", "solo bass line, 120 bpm, in A minor", "dark pad"]


@pytest.fixture(scope="module", autouse=True)
def _offline_one_thread() -> Iterator[None]:
    with mf.one_torch_thread(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


def _load(kind: str, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    model = mf.musicgen_model(melody=kind == "melody", stereo=kind == "stereo", seed=5)
    folder = mf.save_musicgen(model, tmp_path_factory.mktemp("decoding") / kind)
    loaded: LoadedModel = MusicgenEngine(model=str(folder), isolate=False, precision="float32")._lm
    return loaded


@pytest.fixture(scope="module", params=["mono", "stereo", "melody"])
def lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return _load(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def mono(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return _load("mono", tmp_path_factory)


def _prompts(lm: LoadedModel, frames: int, n: int = 2) -> np.ndarray:
    """``n`` different stereo-ish prompts of ``frames`` whole codec frames at the model's rate."""
    rng = np.random.default_rng(3)
    t = np.arange(frames * lm.hop) / lm.sample_rate
    out = [
        np.stack([np.sin(2 * np.pi * f * t), np.sin(2 * np.pi * 1.5 * f * t)]) * 0.3
        + 0.01 * rng.standard_normal((2, t.size))
        for f in (110.0, 164.8, 220.0)[:n]
    ]
    return np.asarray(out, dtype=np.float32)[:, : lm.channels]


class _Recording(Decoder):
    """Our decoder, keeping the guided logits of every step."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.scores: list[Any] = []

    def _guide(self, logits: Any) -> Any:
        guided = super()._guide(logits)
        self.scores.append(guided.reshape(-1, guided.shape[-1]).clone())
        return guided


def _generate_codes(
    lm: LoadedModel, texts: list[str], codes: Any, chroma: Any, frames: int
) -> tuple[Any, Any, Any]:
    """transformers' ``generate`` (greedy, our guidance): the codes it hands the codec, its audio, and the
    guided scores of each step."""
    import torch

    model = lm.model
    seen: list[Any] = []
    codec = model.audio_encoder
    decode = type(codec).decode

    def spy(self: Any, audio_codes: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(audio_codes.clone())
        return decode(self, audio_codes, *args, **kwargs)

    tokens = lm.tokenizer(texts, padding=True, return_tensors="pt")
    kwargs: dict[str, Any] = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    if codes is not None:
        kwargs["decoder_input_ids"] = codes.reshape(-1, codes.shape[-1])
    if chroma is not None:
        kwargs["input_features"] = chroma
    delay = lm.num_codebooks // lm.channels - 1
    with pytest.MonkeyPatch.context() as mp, torch.inference_mode():
        mp.setattr(type(codec), "decode", spy)
        out = model.generate(
            **kwargs,
            do_sample=False,
            guidance_scale=GREEDY.guidance_scale,
            max_new_tokens=frames + delay,
            output_scores=True,
            return_dict_in_generate=True,
        )
    if lm.channels == 1:
        made = seen[0][0]
    else:  # left and right decoded apart: interleave them back
        left, right = seen[0][0], seen[1][0]
        made = torch.stack([left, right], dim=2).reshape(left.shape[0], -1, left.shape[-1])
    return made, out.sequences.float().numpy(), out.scores


@pytest.mark.parametrize("prompt_frames", [0, 30, 120])  # 120: a prefill in chunks, a decode of the tail only
def test_greedy_tokens_and_audio_equal_transformers_generate(lm: LoadedModel, prompt_frames: int) -> None:
    import torch

    frames, prompted = 12, prompt_frames > 0
    rows = [0, 0, 1]  # two rows share a prompt (and text), the third has its own
    prompts = _prompts(lm, prompt_frames) if prompted else None
    melody = _prompts(lm, 40)[:, 0] if lm.melody else None
    chroma = torch.from_numpy(sampling.melody_chroma(melody, lm))[rows] if melody is not None else None
    codes = None
    if prompts is not None:
        codes = sampling.encode_prompts(lm, prompts).reshape(len(prompts), lm.num_codebooks, -1)[rows]
    theirs, their_audio, their_scores = _generate_codes(lm, TEXTS, codes, chroma, frames)
    assert theirs.shape == (3, lm.num_codebooks, prompt_frames + frames)

    ours_audio = sampling.generate_rows(
        lm,
        TEXTS,
        prompts,
        melody,
        rows,
        [1, 2, 3],
        frames,
        GREEDY,  # greedy: seeds play no part
    )
    # the same tokens: decode ours through the loop directly
    tokens = lm.tokenizer(list(dict.fromkeys(TEXTS)), padding=True, return_tensors="pt")
    units = [0, 0, 1]
    unit_codes = torch.zeros((2, lm.num_codebooks, 0), dtype=torch.long) if codes is None else codes[[0, 2]]
    cond = Conditions(
        tokens["input_ids"], tokens["attention_mask"], None if chroma is None else chroma[[0, 2]]
    )
    decoder = _Recording(lm.model, lm.melody, lm.channels, GREEDY)
    with torch.inference_mode():
        ours = decoder.run(cond, unit_codes, units, [1, 2, 3], frames, Progress())
    assert torch.equal(ours, theirs[..., prompt_frames:])
    # the guided logits of every step, not only their argmax
    assert len(decoder.scores) == len(their_scores) == frames + lm.num_codebooks // lm.channels - 1
    for mine, their in zip(decoder.scores, their_scores, strict=True):
        torch.testing.assert_close(mine, their.float(), atol=1e-4, rtol=1e-4)
    # and the same audio: generate decodes prompt and continuation; ours the prompt's last frames before it
    assert prompt_frames <= sampling.CODEC_WARMUP_FRAMES or prompt_frames > 2 * PREFILL_CHUNK
    tail = their_audio[..., prompt_frames * lm.hop :]
    assert ours_audio.shape == tail.shape == (3, lm.channels, frames * lm.hop)
    np.testing.assert_allclose(ours_audio, tail, atol=1e-5)


def test_delay_pattern_positions() -> None:
    """Codebook k holds frame f at position f + 1 + k (stereo: k // 2); prompt positions and the ends are
    forced, the rest is sampled."""
    import torch

    mono = DelayPattern(4, 1, prompt=2, frames=3, start=99)
    assert (mono.length, mono.steps, mono.max_delay) == (9, 6, 3)
    codes = torch.tensor([[[10, 11], [20, 21], [30, 31], [40, 41]]])
    seq = mono.sequence(codes)
    assert seq[0].tolist() == [
        [99, 10, 11, 99, 99, 99, 99, 99, 99],
        [99, 99, 20, 21, 99, 99, 99, 99, 99],
        [99, 99, 99, 30, 31, 99, 99, 99, 99],
        [99, 99, 99, 99, 40, 41, 99, 99, 99],
    ]
    # first decoded position is 3: codebook 0 samples frame 2, the others still replay the prompt
    assert mono.forced(3, torch.device("cpu")).tolist() == [False, True, True, True]
    assert mono.forced(6, torch.device("cpu")).tolist() == [True, False, False, False]  # codebook 0 is done
    stereo = DelayPattern(8, 2, prompt=0, frames=2, start=0)
    assert stereo.delays.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and stereo.steps == 5
    filled = torch.arange(stereo.length).repeat(1, 8, 1)
    assert stereo.generated(filled)[0, :, 0].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]


def test_each_distinct_prompt_is_prefilled_once_in_chunks(
    mono: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = mono.model.decoder
    real = decoder.forward
    calls: list[tuple[int, int]] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        ids = kwargs["input_ids"]
        calls.append((int(ids.shape[0]) // mono.num_codebooks, int(ids.shape[-1])))
        return real(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", counting)
    prompt_frames, frames = 2 * PREFILL_CHUNK + 10, 5
    prompts = _prompts(mono, prompt_frames)
    sampling.generate_rows(
        mono, ["a"] * 5, prompts, None, [0, 0, 0, 1, 1], list(range(5)), frames, Sampling()
    )
    prefill = [c for c in calls if c[1] > 1]
    # 2 distinct prompts x 2 guidance halves, over BOS + the prompt in chunks of PREFILL_CHUNK
    assert prefill == [(4, PREFILL_CHUNK), (4, PREFILL_CHUNK), (4, 11)]
    steps = [c for c in calls if c[1] == 1]
    delay = mono.num_codebooks - 1
    assert len(steps) == frames + delay - 1 and all(rows == 10 for rows, _ in steps)  # 5 rows x 2 halves


def test_a_rows_take_depends_on_its_seed_alone(mono: LoadedModel) -> None:
    import torch

    prompts = _prompts(mono, 20)
    state = torch.random.get_rng_state()
    together = sampling.generate_rows(mono, ["a"] * 3, prompts, None, [0, 0, 1], [7, 8, 9], 10, Sampling())
    alone = sampling.generate_rows(mono, ["a"], prompts, None, [0], [8], 10, Sampling())
    again = sampling.generate_rows(mono, ["a"] * 3, prompts, None, [0, 0, 1], [7, 8, 9], 10, Sampling())
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is never drawn from
    np.testing.assert_allclose(together[1], alone[0], atol=1e-5)  # the same take in another batch
    assert np.array_equal(together, again)
    assert not np.allclose(together[0], together[1])  # same prompt, other seed: another take
    assert row_seed(3, 0, 1) == row_seed(3, 0, 1) != row_seed(3, 1, 0) != row_seed(4, 0, 1)


def test_progress_per_step_and_cancel(mono: LoadedModel) -> None:
    seen: list[tuple[float, str]] = []

    def progress(fraction: float, stage: str) -> None:
        seen.append((fraction, stage))
        if stage == "generate" and sum(s == "generate" for _, s in seen) == 4:
            raise Cancelled()

    prompts = _prompts(mono, PREFILL_CHUNK + 1)
    with pytest.raises(Cancelled):
        sampling.generate_rows(mono, ["a"], prompts, None, [0], [1], 20, Sampling(), progress)
    assert [s for _, s in seen] == ["prompt", "prompt", "generate", "generate", "generate", "generate"]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] < 0.5
    done: list[tuple[float, str]] = []
    out = sampling.generate_rows(
        mono, ["a"], None, None, [0], [1], 6, Sampling(), lambda f, s: done.append((f, s))
    )
    assert out.shape == (1, 1, 6 * mono.hop)
    assert sum(s == "generate" for _, s in done) == 6 + mono.num_codebooks - 1 + 1  # steps, then the end
    assert done[-1] == (1.0, "generate")


def test_rows_and_seeds_must_match(mono: LoadedModel) -> None:
    with pytest.raises(ValueError, match="2 rows need as many texts and seeds, got 2 and 1"):
        sampling.generate_rows(mono, ["a", "b"], None, None, [0, 0], [1], 4, Sampling())


def test_only_the_prompts_a_batch_uses_are_encoded(
    mono: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real = sampling.encode_prompts

    def counting(lm: Any, prompts: np.ndarray) -> Any:
        seen.append(prompts.shape[0])
        return real(lm, prompts)

    monkeypatch.setattr(sampling, "encode_prompts", counting)
    prompts = _prompts(mono, 10, n=3)
    alone = sampling.generate_rows(mono, ["a"], prompts[2:], None, [0], [5], 4, Sampling())
    batch = sampling.generate_rows(mono, ["a", "a"], prompts, None, [2, 2], [5, 6], 4, Sampling())
    assert seen == [1, 1]  # the third window's prompt alone, once for its two rows
    np.testing.assert_allclose(batch[0], alone[0], atol=1e-5)
