"""The OSC contract without sockets: parsing, validation, error codes, replies, handling of bad packets."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.config import Settings
from bridge.errors import AudioReadError, InvalidArgument, StembridgeError, UnknownEngine
from bridge.jobs.queue import JobStatus, ReplyTo, Submission
from bridge.jobs.spec import JobSpec
from bridge.server import protocol
from bridge.server.handlers import RequestHandler
from bridge.server.lograte import LogLimiter
from bridge.server.osc import decode_packet, encode_message
from bridge.server.protocol import parse_request

SEP, GEN, VARY = protocol.SEPARATE, protocol.GENERATE, protocol.VARY


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(
        out_dir=tmp_path / "renders", state_dir=tmp_path / "state", models_dir=tmp_path / "models"
    )


@pytest.fixture()
def wav(tmp_path: Path) -> str:
    """A file that exists and is readable (the protocol checks paths, not audio)."""
    path = tmp_path / "in" / "song.wav"
    path.parent.mkdir()
    path.write_bytes(b"RIFF....WAVE")
    return str(path)


def code_of(fn: Any, *args: Any) -> str:
    with pytest.raises(StembridgeError) as info:
        fn(*args)
    return info.value.code


# --- envelope, numbers and ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [9001, 9001.0, "9001"])
def test_reply_port_may_be_int_float_or_numeric_string(port: Any, settings: Settings) -> None:
    req = parse_request(protocol.PING, [port, "p1"], settings)
    assert (req.command, req.reply_port, req.request_id) == ("ping", 9001, "p1")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "starts with reply_port and request_id"),
        ([9001], "starts with reply_port and request_id"),
        ([9001.5, "p"], "reply_port must be a whole number between 1 and 65535, got the float 9001.5"),
        ([0, "p"], "got the int 0"),
        ([70000, "p"], "got the int 70000"),
        (["port", "p"], "got the string 'port'"),
        ([True, "p"], "got the boolean true"),
        ([9001, ""], "request_id must be 1 to 128 printable characters"),
        ([9001, "x" * 129], "request_id must be 1 to 128"),
        ([9001, b"\x00\x01"], "request_id must be a string, got a blob of 2 bytes"),
    ],
)
def test_bad_envelopes_name_the_value(args: list[Any], fragment: str, settings: Settings) -> None:
    with pytest.raises(InvalidArgument, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_request(protocol.PING, args, settings)


def test_numeric_request_ids_read_as_text(settings: Settings) -> None:
    # Pd sends every number as a float: an id typed as 7 arrives as 7.0.
    assert parse_request(protocol.PING, [9001, 7.0], settings).request_id == "7"
    assert parse_request(protocol.PING, [9001, 7], settings).request_id == "7"


def test_read_envelope_is_lenient_for_error_replies() -> None:
    assert protocol.read_envelope([9001.0, 12]) == (9001, "12")
    assert protocol.read_envelope(["x", "id"]) == (None, "id")
    assert protocol.read_envelope([9001]) == (9001, "")
    assert protocol.read_envelope([]) == (None, "")


def test_unknown_address_lists_the_known_ones(settings: Settings) -> None:
    with pytest.raises(
        InvalidArgument, match=r"unknown address '/stembridge/sepparate'.*/stembridge/separate"
    ):
        parse_request("/stembridge/sepparate", [9001, "a"], settings)


# --- key / value options ------------------------------------------------------------------------------------


def test_generate_options_int_or_float_and_repeatable_context(
    settings: Settings, wav: str, tmp_path: Path
) -> None:
    other = tmp_path / "keys.wav"
    other.write_bytes(b"x")
    pairs = [
        ("context", wav), ("bpm", 120), ("bars", 8.0), ("context", str(other)), ("timesig", "6/8"),
        ("seed", 7.0), ("variations", "2"), ("prompt", "dark 808"), ("loudness", 0),
    ]  # fmt: skip
    args = [9001, "g1", "Bass", *(x for pair in pairs for x in pair)]
    req = parse_request(GEN, args, settings)
    assert req.job is not None and req.job.kind == "generate"
    o = req.job.options
    assert o["stem"] == "bass"
    assert o["context"] == [wav, str(other)]  # order kept
    assert o["bpm"] == 120.0 and isinstance(o["bpm"], float)
    assert o["bars"] == 8 and isinstance(o["bars"], int)
    assert o["seed"] == 7 and isinstance(o["seed"], int)
    assert o["variations"] == 2
    assert o["time_signature"] == "6/8" and o["prompt"] == "dark 808" and o["match_loudness"] is False
    assert o["out"] == str(settings.out_dir.resolve())
    assert (o["format"], o["bit_depth"], o["sample_rate"], o["engine"]) == ("wav", 24, None, None)


def test_key_aliases_and_case(settings: Settings, wav: str) -> None:
    args = [9001, "v", wav, "Time_Signature", "3/4", "BIT-DEPTH", 16, "sample_rate", 48000.0, "format", "AIF"]
    o = parse_request(VARY, args, settings).job.options  # type: ignore[union-attr]
    assert (o["time_signature"], o["bit_depth"], o["sample_rate"], o["format"]) == ("3/4", 16, 48000, "aiff")
    assert (o["variations"], o["strength"], o["seed"], o["bpm"], o["bars"]) == (3, 0.5, 0, None, None)


def test_separate_stems_repeat_or_comma_list(settings: Settings, wav: str) -> None:
    o = parse_request(SEP, [9001, "s", wav, "stems", "drums,bass", "stem", "vocals"], settings).job.options  # type: ignore[union-attr]
    assert o["stems"] == ["drums", "bass", "vocals"]
    o = parse_request(SEP, [9001, "s", wav, "stems", "drums bass"], settings).job.options  # type: ignore[union-attr]
    assert o["stems"] == ["drums", "bass"]
    assert parse_request(SEP, [9001, "s", wav], settings).job.options["stems"] is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("tail", "code", "fragment"),
    # fmt: off
    [
        (["bpm"], "invalid_argument", "'bpm' has no value"),
        (["bpm", 120, "bars"], "invalid_argument", "'bars' has no value"),
        ([5, 120], "invalid_argument", "an option key must be a string, got the int 5"),
        (
            ["tempo", 120],
            "invalid_argument",
            "unknown option 'tempo' for generate; use bars, bitdepth, bpm, context, context_start, engine",
        ),
        (["bpm", 120, "bpm", 121], "invalid_argument", "option 'bpm' given twice"),
        (
            ["bpm", "fast", "bars", 8],
            "invalid_argument",
            "bpm must be a number between 20 and 400, got the string 'fast'",
        ),
        (["bpm", 0, "bars", 8], "invalid_argument", "bpm must be between 20 and 400, got 0"),
        (
            ["bpm", 120, "bars", 8.5],
            "invalid_argument",
            "bars must be a whole number between 1 and 256, got 8.5",
        ),
        (["bpm", 120, "bars", True], "invalid_argument", "got the boolean true"),
        (["bpm", 120, "bars", 8, "seed", -1], "invalid_argument", "seed must be a whole number"),
        (
            ["bpm", 120, "bars", 8, "variations", 17],
            "invalid_argument",
            "variations must be a whole number between 1 and 16",
        ),
        (["bpm", 120, "bars", 8, "timesig", "5/3"], "invalid_argument", "denominator must be one of"),
        (
            ["bpm", 120, "bars", 8, "engine", "nope"],
            "unknown_engine",
            "unknown engine 'nope'; choose one of: auto, ",  # then the engine names
        ),
        (["bpm", 120, "bars", 8, "bitdepth", 20], "invalid_argument", "bitdepth must be 16, 24 or 32"),
        (
            ["bpm", 120, "bars", 8, "samplerate", 1000],
            "invalid_argument",
            "samplerate must be a whole number between 8000",
        ),
        (["bpm", 120, "bars", 8, "format", "mp3"], "invalid_argument", "format must be wav or aiff"),
        (
            ["bpm", 120, "bars", 8, "position", -1.0],
            "invalid_argument",
            "position must be a number between 0",
        ),
        (["bpm", 120, "bars", 8, "prompt", None], "invalid_argument", "prompt must be a string, got nil"),
        (["bars", 8], "invalid_argument", "generate needs bpm, e.g. `bpm 120 bars 8`"),
        ([], "invalid_argument", "generate needs bpm and bars"),
    ],
    # fmt: on
)
def test_bad_generate_options_get_codes_and_clear_messages(
    tail: list[Any], code: str, fragment: str, settings: Settings
) -> None:
    with pytest.raises(StembridgeError) as info:
        parse_request(GEN, [9001, "g", "bass", *tail], settings)
    assert info.value.code == code
    assert fragment in info.value.message


def test_bad_stems_and_positional(settings: Settings, wav: str) -> None:
    assert (
        code_of(parse_request, GEN, [9001, "g", "kazoo", "bpm", 120, "bars", 4], settings)
        == "invalid_argument"
    )
    with pytest.raises(InvalidArgument, match="stems must name some of drums, bass"):
        parse_request(SEP, [9001, "s", wav, "stems", "drums,flute"], settings)
    with pytest.raises(InvalidArgument, match="needs the path after reply_port and request_id"):
        parse_request(SEP, [9001, "s"], settings)
    with pytest.raises(InvalidArgument, match="needs the job id"):
        parse_request(protocol.STATUS, [9001, "s"], settings)


# --- paths --------------------------------------------------------------------------------------------------


def test_input_paths_must_exist_be_absolute_and_readable(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(AudioReadError, match=f"file not found: {tmp_path / 'nope.wav'}; check the path"):
        parse_request(SEP, [9001, "s", str(tmp_path / "nope.wav")], settings)
    with pytest.raises(InvalidArgument, match="must be an absolute path"):
        parse_request(SEP, [9001, "s", "song.wav"], settings)
    with pytest.raises(AudioReadError, match="is not a file"):
        parse_request(VARY, [9001, "s", str(tmp_path)], settings)
    with pytest.raises(AudioReadError, match="context file not found"):
        parse_request(
            GEN, [9001, "g", "bass", "bpm", 120, "bars", 4, "context", str(tmp_path / "x.wav")], settings
        )
    if os.geteuid() != 0:  # root reads everything
        locked = tmp_path / "locked.wav"
        locked.write_bytes(b"x")
        locked.chmod(0)
        assert code_of(parse_request, SEP, [9001, "s", str(locked)], settings) == "unreadable_audio"


def test_max_style_volume_paths_are_understood(settings: Settings, wav: str) -> None:
    req = parse_request(SEP, [9001, "s", f"Macintosh HD:{wav}"], settings)
    assert req.job is not None and req.job.options["path"] == wav


def test_out_resolves_inside_the_render_folder(settings: Settings, wav: str, tmp_path: Path) -> None:
    root = settings.out_dir.resolve()

    def out(value: Any, s: Settings = settings) -> str:
        req = parse_request(SEP, [9001, "s", wav, "out", value], s)
        assert req.job is not None
        return str(req.job.options["out"])

    assert out("My Song/take 1") == str(root / "My_Song" / "take_1")  # relative: a sanitised subfolder
    assert out(str(root / "abs")) == str(root / "abs")
    for escape in ("../elsewhere", "a/../../b", str(tmp_path / "elsewhere"), str(root / ".." / "x"), "/etc"):
        with pytest.raises(InvalidArgument, match="out must"):
            out(escape)
    root.mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)  # a symlink inside that points outside does not get out either
    with pytest.raises(InvalidArgument, match="inside the render folder or an allowed root"):
        out(str(root / "link" / "x"))
    allowed = Settings(out_dir=settings.out_dir, allowed_roots=(tmp_path / "projects",))
    assert out(str(tmp_path / "projects" / "a"), allowed) == str((tmp_path / "projects" / "a").resolve())


def test_out_is_checked_where_its_links_lead_relative_or_absolute(
    settings: Settings, wav: str, tmp_path: Path
) -> None:
    root = settings.out_dir.resolve()
    root.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "real").mkdir()
    (root / "inner").symlink_to(root / "real", target_is_directory=True)

    def out(value: str) -> str:
        req = parse_request(SEP, [9001, "s", wav, "out", value], settings)
        assert req.job is not None
        return str(req.job.options["out"])

    for value in ("escape", "escape/sub", "./escape/sub", str(root / "escape"), str(root / "escape" / "sub")):
        with pytest.raises(InvalidArgument) as info:
            out(value)
        assert info.value.message == (
            f"out must be a folder inside the render folder or an allowed root ({root}), symlinks followed, "
            f"got {value!r}; add it to allowed_roots in the config file to allow it"
        )
    # a link that stays inside works, and the job is given the real folder
    assert out("inner/sub") == str(root / "real" / "sub")
    assert out(str(root / "inner")) == str(root / "real")
    assert not list(outside.iterdir())


def test_remote_requests_may_only_read_inside_the_allowed_roots(
    settings: Settings, wav: str, tmp_path: Path
) -> None:
    assert parse_request(SEP, [9001, "s", wav], settings).job is not None  # local: any readable file
    with pytest.raises(
        InvalidArgument, match="when the request comes from another machine, got '.*song.wav'"
    ):
        parse_request(SEP, [9001, "s", wav], settings, remote=True)
    context = ["bpm", 120, "bars", 4, "context", wav]
    with pytest.raises(InvalidArgument, match="context must lie inside the render folder or an allowed root"):
        parse_request(GEN, [9001, "g", "bass", *context], settings, remote=True)
    shared = Settings(out_dir=settings.out_dir, allowed_roots=(tmp_path / "in",))
    assert parse_request(SEP, [9001, "s", wav], shared, remote=True).job is not None
    (tmp_path / "in" / "link.wav").symlink_to(
        "/etc/hostname"
    )  # a link inside that points outside does not count
    with pytest.raises(InvalidArgument, match="allowed root"):
        parse_request(SEP, [9001, "s", str(tmp_path / "in" / "link.wav")], shared, remote=True)


def test_the_handler_treats_other_machines_as_remote(settings: Settings, wav: str) -> None:
    rec = Recorder()
    handler = RequestHandler(settings, rec, rec, LogLimiter(logging.getLogger("test")))  # type: ignore[arg-type]
    feed(
        handler,
        (packet(SEP, 9001, "far", wav), "192.168.1.20"),
        (packet(SEP, 9001, "near", wav), "127.0.0.1"),
        (packet(SEP, 9001, "near6", wav), "::1"),
        (packet(SEP, 9001, "mapped", wav), "::ffff:127.0.0.1"),  # a daemon on ::
    )
    assert [(to.host, reply[1][:2]) for to, reply in rec.sent] == [
        ("192.168.1.20", ["far", "invalid_argument"]),
        ("127.0.0.1", ["near", 0]),
        ("::1", ["near6", 1]),
        ("::ffff:127.0.0.1", ["mapped", 2]),
    ]


# --- token --------------------------------------------------------------------------------------------------


def test_token_is_required_when_configured(settings: Settings) -> None:
    guarded = Settings(out_dir=settings.out_dir, token="s3cret")
    with pytest.raises(protocol.Unauthorized, match="needs a token"):
        parse_request(protocol.PING, [9001, "p"], guarded)
    with pytest.raises(protocol.Unauthorized, match="wrong token"):
        parse_request(protocol.PING, [9001, "p", "token", "guess"], guarded)
    assert parse_request(protocol.PING, [9001, "p", "token", "s3cret"], guarded).command == "ping"
    assert parse_request(protocol.PING, [9001, "p", "token", "ignored"], settings).command == "ping"
    assert code_of(parse_request, protocol.PING, [9001, "p"], guarded) == "unauthorized"


# --- replies and packets ------------------------------------------------------------------------------------


def test_reply_messages() -> None:
    assert protocol.pong("p", "0.1.0", ["builtin"]) == ("/stembridge/pong", ["p", "0.1.0", "builtin"])
    assert protocol.accepted("j", 2) == ("/stembridge/accepted", ["j", 2])
    done = protocol.state("j", "done", 1.0, ["/a.wav", "/b.wav"])
    assert done == ("/stembridge/state", ["j", "done", 1.0, "/a.wav", "/b.wav"])
    failed = protocol.state("j", "failed", 0.5, code="cancelled", message="m")
    assert failed[1] == ["j", "failed", 0.5, "cancelled", "m"]
    assert protocol.state("j", "unknown")[1] == ["j", "unknown"]
    assert protocol.state("j", "queued", 0.0)[1] == ["j", "queued", 0.0]


def test_encode_then_decode_round_trip() -> None:
    data = encode_message("/stembridge/done", ["j1", "/tmp/ä b.wav", 3, 2**40, 0.25])
    assert decode_packet(data) == [("/stembridge/done", ["j1", "/tmp/ä b.wav", 3, 2**40, 0.25])]


def test_bundles_are_flattened() -> None:
    bundle = OscBundleBuilder(IMMEDIATELY)
    for rid in ("a", "b"):
        msg = OscMessageBuilder(protocol.PING)
        msg.add_arg(9001)
        msg.add_arg(rid)
        bundle.add_content(msg.build())
    assert [args[1] for _, args in decode_packet(bundle.build().dgram)] == ["a", "b"]


@pytest.mark.parametrize(
    "junk", [b"", b"\x00", b"hello", b"/stembridge/ping\x00\x00\x00\x00,ii\x00\x00", b"#bundle\x00"]
)
def test_garbage_is_an_invalid_argument(junk: bytes) -> None:
    with pytest.raises(InvalidArgument, match="not an OSC packet"):
        decode_packet(junk)


def _bundle(*elements: tuple[int, bytes]) -> bytes:
    return (
        b"#bundle\0"
        + b"\0" * 7
        + b"\1"
        + b"".join(n.to_bytes(4, "big", signed=True) + e for n, e in elements)
    )


@pytest.mark.parametrize(
    ("junk", "why"),
    [
        (_bundle((0, b"")), "a bundle element of 0 bytes"),  # python-osc would loop forever on these two
        (_bundle((-8, b"")), "a bundle element of -8 bytes"),
        (_bundle((400, encode_message(protocol.PING, [9001, "p"]))), "a bundle element of 400 bytes"),
        (_bundle((8, b"junkjunk")), "starts with '/' (a message) or '#bundle'"),
        (
            encode_message(protocol.PING, [9001, "p"]).replace(b",is", b",ic"),
            "unsupported OSC type tag(s) 'c'",
        ),
    ],
)
def test_malformed_frames_are_refused_before_python_osc_sees_them(junk: bytes, why: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(why)):
        decode_packet(junk)
    nested = encode_message(protocol.PING, [9001, "p"])
    for _ in range(9):
        nested = _bundle((len(nested), nested))
    with pytest.raises(InvalidArgument, match="bundles nested more than 8 deep"):
        decode_packet(nested)


def test_encode_options_flattens_repeats_and_skips_none() -> None:
    flat = protocol.encode_options({"context": ["/a", "/b"], "bpm": 120.0, "seed": None})
    assert flat == ["context", "/a", "context", "/b", "bpm", 120.0]


# --- the handler, with a recording replier and queue --------------------------------------------------------


class Recorder:
    """Stands in for the replier and the queue: records what the handler sends and submits."""

    def __init__(self) -> None:
        self.sent: list[tuple[ReplyTo, tuple[str, list[Any]]]] = []
        self.submitted: list[tuple[str, str, JobSpec]] = []

    def send(self, to: ReplyTo, reply: tuple[str, list[Any]]) -> None:
        self.sent.append((to, reply))

    def submit(self, client: str, request_id: str, spec: JobSpec, reply: ReplyTo) -> Submission:
        self.submitted.append((client, request_id, spec))
        return Submission(True, JobStatus(request_id, "queued", position=len(self.submitted) - 1))


def packet(address: str, *args: Any) -> bytes:
    return encode_message(address, list(args))


def feed(handler: RequestHandler, *packets: tuple[bytes, str]) -> None:
    """Hand ``(packet, sender IP)`` pairs to the handler on an event loop, one by one, each answered (its file
    checks done) before the next, as a daemon would when a client waits for each reply."""

    async def run() -> None:
        for data, host in packets:
            handler.on_packet(data, host, 5000, None)
            await handler.drain()

    asyncio.run(run())


def test_handler_replies_to_the_reply_port_and_queues_jobs(settings: Settings, wav: str) -> None:
    rec = Recorder()
    handler = RequestHandler(settings, rec, rec, LogLimiter(logging.getLogger("test")))  # type: ignore[arg-type]
    feed(
        handler,
        (packet(protocol.PING, 9001, "p1"), "127.0.0.1"),
        (packet(SEP, 9001.0, "j1", wav), "127.0.0.1"),
    )
    assert [(to.host, to.port) for to, _ in rec.sent] == [("127.0.0.1", 9001)] * 2  # not the sender's port
    assert rec.sent[0][1][0] == protocol.PONG and rec.sent[0][1][1][:2] == ["p1", "0.1.0"]
    assert rec.sent[1][1] == (protocol.ACCEPTED, ["j1", 0])
    assert [(c, r, s.kind) for c, r, s in rec.submitted] == [("127.0.0.1", "j1", "separate")]


def test_handler_survives_bad_input_with_error_replies_and_few_log_lines(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    handler = RequestHandler(settings, rec, rec, LogLimiter(logging.getLogger("test.flood"), interval=60))  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    bad = [
        packet(SEP, 9001, "a", "/no/such/file.wav"),
        packet(GEN, 9001, "b", "bass", "bpm", "fast", "bars", 4),
        packet("/stembridge/nope", 9001, "c"),
        packet(SEP, 9001, "d"),
        packet(protocol.STATUS, 9001.5, "e", "x"),  # no readable reply port: no reply
        packet("/other/app", 9001, "f"),  # not ours: no reply
    ]
    junk = [rng.bytes(int(rng.integers(1, 64))) for _ in range(50)]
    truncated = packet(protocol.PING, 9001, "ok")[:-3]
    with caplog.at_level(logging.INFO, logger="test.flood"):
        for i in range(50):
            feed(handler, *[(data, "127.0.0.1") for data in (*bad, junk[i], truncated)])
    codes = {(r[1][1][0], r[1][1][1]) for r in rec.sent}
    assert codes == {
        ("a", "unreadable_audio"),
        ("b", "invalid_argument"),
        ("c", "invalid_argument"),
        ("d", "invalid_argument"),
    }
    assert len(rec.sent) == 4 * 50 and not rec.submitted
    assert len(caplog.records) <= 8, [r.getMessage() for r in caplog.records]  # one line per kind, not 400


def test_unknown_engine_is_its_own_code(settings: Settings, wav: str) -> None:
    with pytest.raises(UnknownEngine):
        parse_request(SEP, [9001, "s", wav, "engine", "demucs9"], settings)
