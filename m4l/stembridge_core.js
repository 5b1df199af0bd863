// stembridge_core.js: the pure half of the Stembridge Max for Live device (ES5, for Max's classic [js]).
//
// Timing math, request building, reply parsing and insertion planning. Nothing here touches Max or Live, so the
// same file is loaded by the device (`require("stembridge_core")` in stembridge.js; Max 8's js has CommonJS-style
// require) and by the tests under node (tests/m4l/harness.js). The OSC contract is docs/PROTOCOL.md.

var PREFIX = "/stembridge/";
var GENERATE_STEMS = ["bass", "drums", "keys", "pad", "lead", "vocals", "other"];

/** Quarter notes in one bar of `numerator/denominator` (Live's beats are quarter notes). */
function quartersPerBar(numerator, denominator) {
    return numerator * 4.0 / denominator;
}

/** Whole bars in `lengthBeats` at a signature: {bars, exact}; at least 1 bar. */
function barsOf(lengthBeats, numerator, denominator) {
    var exact = lengthBeats / quartersPerBar(numerator, denominator);
    var bars = Math.max(1, Math.round(exact));
    return { bars: bars, exact: Math.abs(exact - Math.round(exact)) < 1e-6 && exact >= 1 - 1e-6 };
}

/** Beats (quarter notes) to seconds at a constant tempo. */
function beatsToSeconds(beats, tempo) {
    return beats * 60.0 / tempo;
}

/** Seconds as decimal text with microsecond resolution ("12.5" -> "12.500000"). Sent as text because
 * Max's [udpsend] sends numbers as 32-bit floats, which lose sub-sample precision beyond a few minutes;
 * the daemon reads numeric strings. */
function secondsText(seconds) {
    return (Math.round(seconds * 1e6) / 1e6).toFixed(6);
}

function clampInt(value, low, high) {
    var n = Math.round(Number(value));
    if (isNaN(n)) {
        return low;
    }
    return Math.min(high, Math.max(low, n));
}

/** Request ids unique across sessions (the daemon remembers ids for 30 days): a session part drawn at load
 * from the clock and a random number, then a counter. */
function makeSession(timeMs, random) {
    return "m4l" + Math.floor(timeMs).toString(36) + Math.floor(random * 46656).toString(36);
}

function requestId(session, counter) {
    return session + "-" + counter;
}

/** Live returns a property as a list of atoms; a symbol with spaces may come split, or quoted. */
function atomText(value) {
    var text = value instanceof Array ? value.join(" ") : String(value);
    if (text.length >= 2 && text.charAt(0) === "\"" && text.charAt(text.length - 1) === "\"") {
        text = text.substring(1, text.length - 1);
    }
    return text;
}

function atomNumber(value) {
    return Number(value instanceof Array ? value[0] : value);
}

/** Where a clip (or a track) lives, from its canonical path:
 * "live_set tracks 2 clip_slots 5 clip" -> {track: 2, slot: 5, arrangement: false};
 * "live_set tracks 2 arrangement_clips 0" -> {track: 2, slot: -1, arrangement: true};
 * "live_set tracks 2" -> {track: 2, slot: -1, arrangement: null}; null otherwise. */
function clipPlace(path) {
    var words = atomText(path).split(" ");
    if (words[0] !== "live_set" || words[1] !== "tracks") {
        return null;
    }
    var track = parseInt(words[2], 10);
    if (isNaN(track)) {
        return null;
    }
    if (words.length === 3) {
        return { track: track, slot: -1, arrangement: null };
    }
    if (words[3] === "clip_slots") {
        return { track: track, slot: parseInt(words[4], 10), arrangement: false };
    }
    if (words[3] === "arrangement_clips") {
        return { track: track, slot: -1, arrangement: true };
    }
    return null;
}

/** Whether a Live version has Track.create_audio_clip and ClipSlot.create_audio_clip (12.0.5 and later). */
function canInsert(major, minor, bugfix) {
    if (major !== 12) {
        return major > 12;
    }
    return minor > 0 || bugfix >= 5;
}

/** The timing a request needs, from the song and a region of it: {bpm, bars, exact, timesig, positionBeats,
 * positionSeconds}. `region` is {startBeats, lengthBeats}. */
function timing(song, region) {
    var b = barsOf(region.lengthBeats, song.numerator, song.denominator);
    return {
        bpm: song.tempo,
        bars: b.bars,
        exact: b.exact,
        timesig: song.numerator + "/" + song.denominator,
        positionBeats: region.startBeats,
        positionSeconds: beatsToSeconds(region.startBeats, song.tempo)
    };
}

// --- which part of its file a clip plays ------------------------------------------------------------------
//
// Live's Clip (LOM): loop_start / loop_end are in beats for warped clips and in SECONDS of the file for unwarped
// audio clips ("0 is the time of the first sample"; unwarped clips cannot loop, so they are the clip's start and
// end). start_marker / end_marker are documented in beats only, so unwarped clips are read through loop_start /
// loop_end. Warped clips map beats to file seconds through `warp_markers` ({warp_markers: [{sample_time (s),
// beat_time}]}, Live 11+), linearly between the two markers around a beat; Live's Clip.beat_to_sample_time does
// the same but is not in Max's LiveAPI. A section is exact only where the clip plays its file in real time: always
// when unwarped, and when warped only where its markers run at the set's tempo. A warped clip whose file runs at
// another tempo plays a stretched section: there is no part of the file that the results could be, sample for
// sample, so such a clip is sent as before (the whole file, with a note when it starts inside it).

var SECTION_TOLERANCE = 1e-4; // seconds a warp map may stray from real time and still count as real time

/** Warp markers from LiveAPI's `get("warp_markers")` (a one-atom list holding a JSON dict), sorted by beat;
 * [] when there are none or they cannot be read. */
function parseWarpMarkers(value) {
    var text = atomText(value);
    var data;
    if (!text) {
        return [];
    }
    try {
        data = JSON.parse(text);
    } catch (err) {
        return [];
    }
    var list = data instanceof Array ? data : (data && data.warp_markers) || [];
    var markers = [];
    for (var i = 0; i < list.length; i++) {
        var beat = Number(list[i].beat_time);
        var seconds = Number(list[i].sample_time);
        if (isFinite(beat) && isFinite(seconds)) {
            markers.push({ beat: beat, seconds: seconds });
        }
    }
    markers.sort(function (a, b) { return a.beat - b.beat; });
    return markers;
}

/** The file time (seconds) a warped clip plays at clip beat `beat`: linear between the markers around it, and
 * beyond the first or last marker at the rate of the nearest segment. NaN with fewer than two markers. */
function warpSeconds(markers, beat) {
    if (markers.length < 2) {
        return NaN;
    }
    var i = 0;
    while (i < markers.length - 2 && beat > markers[i + 1].beat) {
        i += 1;
    }
    var a = markers[i];
    var b = markers[i + 1];
    if (b.beat === a.beat) {
        return a.seconds;
    }
    return a.seconds + (beat - a.beat) * (b.seconds - a.seconds) / (b.beat - a.beat);
}

/** The clip beats a clip plays, {from, to}, or null when it wraps around its loop (no single stretch of file).
 * Arrangement: from the start marker for its length on the timeline; Session: the loop, or start to end. */
function playedBeats(clip) {
    if (clip.arrangement) {
        var to = clip.startMarker + clip.lengthBeats;
        if (clip.looping && to > clip.loopEnd + 1e-6) {
            return null;
        }
        return { from: clip.startMarker, to: to };
    }
    return clip.looping ? { from: clip.loopStart, to: clip.loopEnd } : { from: clip.startMarker, to: clip.endMarker };
}

/** The part of its file a clip plays: {exact, start, length, whole, fileBpm, reason}, in seconds.
 * `clip`: {warping, looping, arrangement, startMarker, endMarker, loopStart, loopEnd, lengthBeats (on the
 * timeline, Arrangement), warpMarkers ([{beat, seconds}]), fileSeconds (NaN when unknown)}.
 * `exact`: the results can be that part of the file, sample for sample where the clip plays it (then `start`
 * and `length` say which; `whole` when that is the whole file); otherwise `reason` says why not. */
function fileSection(clip, tempo) {
    var secondsPerBeat = 60.0 / tempo;
    var section;
    if (!clip.warping) {
        section = {
            start: clip.loopStart,
            length: clip.arrangement ? clip.lengthBeats * secondsPerBeat : clip.loopEnd - clip.loopStart
        };
    } else {
        var span = playedBeats(clip);
        if (span === null) {
            return { exact: false, reason: "it loops, so it plays parts of its file more than once" };
        }
        var markers = clip.warpMarkers || [];
        var start = warpSeconds(markers, span.from);
        if (isNaN(start)) {
            return { exact: false, reason: "Live did not give its warp markers" };
        }
        var points = [span.to];
        for (var i = 0; i < markers.length; i++) {
            if (markers[i].beat > span.from && markers[i].beat < span.to) {
                points.push(markers[i].beat);
            }
        }
        for (var k = 0; k < points.length; k++) {
            var drift = warpSeconds(markers, points[k]) - start - (points[k] - span.from) * secondsPerBeat;
            if (Math.abs(drift) > SECTION_TOLERANCE) {
                var fileSpan = warpSeconds(markers, span.to) - start;
                return {
                    exact: false,
                    fileBpm: fileSpan > 0 ? 60.0 * (span.to - span.from) / fileSpan : NaN,
                    reason: "it is warped to the set's tempo from another one"
                };
            }
        }
        if (start < -SECTION_TOLERANCE) {
            return { exact: false, reason: "its warp markers put its start before the file's" };
        }
        section = { start: Math.max(0, start), length: (span.to - span.from) * secondsPerBeat };
    }
    if (!(section.length > 0)) {
        return { exact: false, reason: "it is empty" };
    }
    section.exact = true;
    section.whole = section.start < 1e-6 && isFinite(clip.fileSeconds) &&
        Math.abs(section.length - clip.fileSeconds) <= SECTION_TOLERANCE;
    return section;
}

/** Where bar 1 of the loop range falls in a clip's file (seconds), for `context_start`; null when the clip
 * cannot give context from there: it starts after the range starts, or it plays its file at another speed and
 * does not start at the file's start (then nothing exact can be said). `clip` as for fileSection, plus
 * startBeats (its place on the timeline); `section` what fileSection gave. */
function contextStart(clip, section, rangeStartBeats, tempo) {
    var late = clip.startBeats - rangeStartBeats;
    if (late > 1e-3) {
        return null;
    }
    if (section.exact) {
        return section.start + Math.max(0, -late) * 60.0 / tempo;
    }
    return Math.abs(late) <= 1e-3 && Math.abs(clip.startMarker) < 1e-6 ? 0 : null;
}

/** A note for a clip the device cannot send exactly (or "" when there is nothing to say). */
function sectionNote(clip, section, kind) {
    if (section.exact) {
        if (!clip.warping && kind !== "separate") {
            return "Note: the clip is not warped; stembridge takes its music to be at the set's tempo.";
        }
        return "";
    }
    var from = clip.arrangement || !clip.looping ? clip.startMarker : clip.loopStart;
    if (Math.abs(from) < 1e-6) {
        return ""; // it plays its file from the start, as stembridge reads it (stretched to the set's tempo)
    }
    var why = section.reason + (section.fileBpm ? " (its file runs at " + Math.round(section.fileBpm * 100) / 100 + " bpm)" : "");
    return "Note: the clip plays part of its file, but " + why + ": stembridge reads the whole file from its " +
        "start. Consolidate the clip (Cmd/Ctrl+J) for exact alignment.";
}

/** The OSC message (address first, as Max's [udpsend] takes it) for one request.
 * `job`: {kind, replyPort, id, path | stem, context[], contextStart[] (seconds, one per context), bpm, bars,
 *        timesig, section ({start, length} seconds: the part of the file), positionSeconds, prompt, seed,
 *        variations, strength, engine, model, midi (true: also a MIDI file per audio file), token}. Times go out as decimal text (see secondsText). */
function buildRequest(job) {
    var msg = [PREFIX + job.kind, job.replyPort, job.id];
    var i;
    function add(key, value) {
        if (value !== undefined && value !== null && value !== "") {
            msg.push(key, value);
        }
    }
    if (job.kind === "separate" || job.kind === "vary") {
        msg.push(job.path);
    } else if (job.kind === "generate") {
        msg.push(job.stem);
        for (i = 0; i < (job.context || []).length; i++) {
            add("context", job.context[i]);
        }
        var starts = job.contextStart || [];
        var anyStart = false;
        for (i = 0; i < starts.length; i++) {
            anyStart = anyStart || starts[i] > 0;
        }
        for (i = 0; anyStart && i < starts.length; i++) {
            add("context_start", secondsText(starts[i])); // one per context, in the same order
        }
    } else if (job.kind === "cancel" || job.kind === "status") {
        msg.push(job.target);
    }
    if (job.kind === "generate" || job.kind === "vary") {
        add("bpm", job.bpm);
        add("bars", job.bars);
        add("timesig", job.timesig);
        add("seed", job.seed);
        add("variations", job.variations);
    }
    if (job.kind === "generate") {
        add("prompt", job.prompt);
    }
    if (job.kind === "vary") {
        add("strength", job.strength);
    }
    if ((job.kind === "separate" || job.kind === "vary") && job.section && !job.section.whole) {
        add("start", secondsText(job.section.start));
        add("length", secondsText(job.section.length));
    }
    if (job.kind === "separate" || job.kind === "generate" || job.kind === "vary") {
        if (job.positionSeconds !== undefined && job.positionSeconds !== null) {
            add("position", secondsText(job.positionSeconds));
        }
        if (job.engine && job.engine !== "auto") {
            add("engine", job.engine);
        }
        if (job.model && job.model !== "default") {
            add("model", job.model);
        }
        if (job.midi) {
            add("midi", 1); // a .mid beside each audio file, listed after the audio in `done`
        }
    }
    add("token", job.token);
    return msg;
}

/** One reply from [udpreceive] (address, then its arguments) as an object, or null for a foreign message. */
function parseReply(address, args) {
    var a = args || [];
    var id = a.length ? atomText(a[0]) : "";
    var i;
    switch (address) {
    case PREFIX + "pong":
        return { type: "pong", id: id, version: atomText(a[1]), engines: a.slice(2).map(atomText) };
    case PREFIX + "accepted":
        return { type: "accepted", id: id, queue: atomNumber(a[1]) };
    case PREFIX + "progress":
        return { type: "progress", id: id, fraction: atomNumber(a[1]), stage: atomText(a[2] || "") };
    case PREFIX + "made":
        return { type: "made", id: id, engine: atomText(a[1] || ""), model: atomText(a[2] || ""), notes: a.slice(3).map(atomText) };
    case PREFIX + "done":
        return { type: "done", id: id, paths: a.slice(1).map(atomText) };
    case PREFIX + "queue":
        // <running> <waiting> <job> <fraction> <stage> <yours_waiting>; a Max that drops the empty `job` symbol
        // gives one value fewer, so the job is read only when all six are there
        var rest = a.slice(1);
        if (rest.length === 5) {
            rest.splice(2, 0, "");
        }
        return {
            type: "queue", id: id, running: atomNumber(rest[0]) === 1, waiting: atomNumber(rest[1]) || 0,
            job: atomText(rest[2] === undefined ? "" : rest[2]), fraction: atomNumber(rest[3]) || 0,
            stage: atomText(rest[4] === undefined ? "" : rest[4]), yoursWaiting: atomNumber(rest[5]) || 0
        };
    case PREFIX + "error":
        return { type: "error", id: id, code: atomText(a[1]), message: atomText(a.slice(2)) };
    case PREFIX + "state":
        var reply = { type: "state", id: id, state: atomText(a[1]), fraction: a.length > 2 ? atomNumber(a[2]) : 0 };
        if (reply.state === "done") {
            reply.paths = a.slice(3).map(atomText);
        } else if (reply.state === "failed") {
            reply.code = atomText(a[3]);
            reply.message = atomText(a.slice(4));
        }
        return reply;
    case PREFIX + "models":
        var models = [];
        for (i = 1; i + 4 < a.length; i += 5) {
            models.push({
                name: atomText(a[i]),
                engine: atomText(a[i + 1]),
                tasks: atomText(a[i + 2]).split("/"),
                available: atomNumber(a[i + 3]) === 1,
                reason: atomText(a[i + 4])
            });
        }
        return { type: "models", id: id, models: models };
    default:
        return null;
    }
}

/** The file name of a path (either slash). */
function baseName(path) {
    var parts = String(path).split(/[\\\/]/);
    return parts[parts.length - 1];
}

function folderOf(path) {
    var text = String(path);
    var cut = Math.max(text.lastIndexOf("/"), text.lastIndexOf("\\"));
    return cut > 0 ? text.substring(0, cut) : text;
}

/** What a result file is, from the daemon's names: `<source>__<stem>[__<bpm>bpm__<bars>bars][__v<k>].<ext>`,
 * with `-2`, `-3`... when a name was taken. {stem, variation} (variation 0 when none). */
function describeFile(path) {
    var name = baseName(path).replace(/\.[A-Za-z0-9]+$/, "").replace(/-\d+$/, "");
    var parts = name.split("__");
    var stem = parts.length > 1 ? parts[1] : name;
    var variation = 0;
    var last = parts[parts.length - 1];
    if (parts.length > 2 && /^v\d+$/.test(last)) {
        variation = parseInt(last.substring(1), 10);
    }
    return { stem: stem, variation: variation };
}

/** Whether a path is a MIDI file: a `.mid` (or `.midi`) extension, in any case. */
function isMidiPath(path) {
    return /\.midi?$/i.test(String(path));
}

/** A `done` reply's paths split into the audio files and the MIDI files (the daemon lists the audio first). */
function splitPaths(paths) {
    var split = { audio: [], midi: [] };
    for (var i = 0; i < paths.length; i++) {
        (isMidiPath(paths[i]) ? split.midi : split.audio).push(paths[i]);
    }
    return split;
}

function withoutExtension(path) {
    return String(path).replace(/\.[A-Za-z0-9]+$/, "");
}

/** The MIDI file of each audio file (null where there is none): the one with the audio's name and `.mid` (or
 * `-2.mid`, `-3.mid`... when the daemon found that name taken), else the one in the same place in the list (the
 * daemon lists them in the same order as the audio).
 * Returns {byAudio: [path | null], unused: [paths of MIDI files no audio file claimed]}. */
function pairMidi(audio, midi) {
    var byAudio = [];
    var taken = {};
    var i, k;
    for (i = 0; i < audio.length; i++) {
        byAudio.push(null);
        for (k = 0; k < midi.length; k++) {
            var name = withoutExtension(midi[k]);
            var base = withoutExtension(audio[i]);
            if (!taken[k] && (name === base || name.replace(/-\d+$/, "") === base)) {
                byAudio[i] = midi[k];
                taken[k] = true;
                break;
            }
        }
    }
    for (i = 0; i < audio.length; i++) {
        if (byAudio[i] === null && i < midi.length && !taken[i]) {
            byAudio[i] = midi[i];
            taken[i] = true;
        }
    }
    var unused = [];
    for (k = 0; k < midi.length; k++) {
        if (!taken[k]) {
            unused.push(midi[k]);
        }
    }
    return { byAudio: byAudio, unused: unused };
}

/** The Live calls that insert a finished job's files (pure: Live's current state comes in `live`).
 *
 * `target`: where the job came from: {kind, arrangement, track, slot, positionBeats, name, stem}.
 *   - separate: one new audio track per stem after the source track, each clip at the source's position
 *     (Arrangement) or in the source's scene (Session);
 *   - generate: Arrangement: one new track per variation at the position; Session: one new track, the
 *     variations in its slots from the source's scene down;
 *   - vary: Arrangement: one new track per variation at the position; Session: the next empty slots below
 *     the source clip on its own track.
 * MIDI files (`.mid`, from a request with `midi 1`) go into MIDI clips beside their audio, `target.lengthBeats`
 * long: an audio file on a new track gets a new MIDI track right after that track, its clip at the same
 * position (Arrangement) or in the same scene (Session); Session variations of a clip on its own track go into
 * the track after it when that is a MIDI track with those slots free, else into a new MIDI track there.
 * `live`: {sceneCount, slotsUsed: [bool per scene of the source track], next: {midi, slotsUsed} (the track after
 * the source track)} (Session only).
 * Returns a list of operations: {op: "create_audio_track", index, name} | {op: "create_midi_track", index, name} |
 * {op: "create_scene"} | {op: "arrangement_clip", track, path, position} | {op: "session_clip", track, slot, path}
 * | {op: "arrangement_midi_clip", track, path, position, length} | {op: "session_midi_clip", track, slot, path,
 * length}. */
function planInsertion(target, paths, live) {
    var ops = [];
    var scenes = live && live.sceneCount ? live.sceneCount : 0;
    var split = splitPaths(paths);
    var midiOf = pairMidi(split.audio, split.midi).byAudio;
    var length = target.lengthBeats;
    var i;
    paths = split.audio;
    function needScene(index) {
        while (scenes <= index) {
            ops.push({ op: "create_scene" });
            scenes += 1;
        }
    }
    function trackName(path, index) {
        var info = describeFile(path);
        if (target.kind === "separate") {
            return info.stem;
        }
        var base = target.kind === "vary" ? target.name || "variation" : target.stem;
        var k = info.variation || index + 1;
        return paths.length > 1 ? base + " v" + k : base;
    }
    var anyMidi = false;
    for (i = 0; i < midiOf.length; i++) {
        anyMidi = anyMidi || midiOf[i] !== null;
    }
    if (target.arrangement || target.kind === "separate") {
        // one new track per file (and a MIDI track after it for its MIDI file)
        var index = target.track + 1;
        for (i = 0; i < paths.length; i++) {
            var name = trackName(paths[i], i);
            ops.push({ op: "create_audio_track", index: index, name: name });
            ops.push(target.arrangement ? { op: "arrangement_clip", track: index, path: paths[i], position: target.positionBeats }
                : { op: "session_clip", track: index, slot: target.slot, path: paths[i] });
            index += 1;
            if (midiOf[i] !== null) {
                ops.push({ op: "create_midi_track", index: index, name: name + " MIDI" });
                ops.push(target.arrangement ? { op: "arrangement_midi_clip", track: index, path: midiOf[i], position: target.positionBeats, length: length }
                    : { op: "session_midi_clip", track: index, slot: target.slot, path: midiOf[i], length: length });
                index += 1;
            }
        }
        return ops;
    }
    if (target.kind === "generate") {
        ops.push({ op: "create_audio_track", index: target.track + 1, name: target.stem });
        if (anyMidi) {
            ops.push({ op: "create_midi_track", index: target.track + 2, name: target.stem + " MIDI" });
        }
        for (i = 0; i < paths.length; i++) {
            needScene(target.slot + i);
            ops.push({ op: "session_clip", track: target.track + 1, slot: target.slot + i, path: paths[i] });
            if (midiOf[i] !== null) {
                ops.push({ op: "session_midi_clip", track: target.track + 2, slot: target.slot + i, path: midiOf[i], length: length });
            }
        }
        return ops;
    }
    // vary in Session view: the next empty slots below the source clip, adding scenes when they run out
    var used = (live && live.slotsUsed) || [];
    var slots = [];
    var slot = target.slot;
    for (i = 0; i < paths.length; i++) {
        slot += 1;
        while (slot < used.length && used[slot]) {
            slot += 1;
        }
        slots.push(slot);
    }
    if (anyMidi && !midiTrackFree(live && live.next, slots, midiOf)) {
        ops.push({ op: "create_midi_track", index: target.track + 1, name: (target.name || "variation") + " MIDI" });
    }
    for (i = 0; i < paths.length; i++) {
        needScene(slots[i]);
        ops.push({ op: "session_clip", track: target.track, slot: slots[i], path: paths[i] });
        if (midiOf[i] !== null) {
            ops.push({ op: "session_midi_clip", track: target.track + 1, slot: slots[i], path: midiOf[i], length: length });
        }
    }
    return ops;
}

/** Whether an existing track (`next`: {midi, slotsUsed}) can take the MIDI clips of variations in `slots`. */
function midiTrackFree(next, slots, midiOf) {
    if (!next || !next.midi) {
        return false;
    }
    for (var i = 0; i < slots.length; i++) {
        if (midiOf[i] !== null && slots[i] < next.slotsUsed.length && next.slotsUsed[slots[i]]) {
            return false;
        }
    }
    return true;
}

/** An error reply in plain words for the device's error line. */
function plainError(code, message) {
    var text = message || "";
    switch (code) {
    case "unreadable_audio":
        return "Could not read the audio: " + text;
    case "invalid_argument":
        return "The daemon refused the request: " + text;
    case "write_failed":
        return "Could not write the result: " + text;
    case "unknown_engine":
    case "engine_unavailable":
    case "unsupported":
    case "model_not_found":
        return "That engine or model cannot do this here: " + text + " (run `stembridge models` to see why)";
    case "cancelled":
        return "Cancelled.";
    case "busy":
        return "The daemon is busy; try again in a moment.";
    case "unauthorized":
        return "The daemon needs a token: " + text;
    case "interrupted":
        return "The daemon stopped during the job; press the button again.";
    case "bad_config":
        return "The daemon's configuration is wrong: " + text;
    default:
        return text ? "Error: " + text : "Error (" + code + ")";
    }
}

function queueText(position) {
    if (position <= 0) {
        return "running";
    }
    return "queued: " + position + (position === 1 ? " job" : " jobs") + " ahead";
}

function plural(n, one, many) {
    return n + " " + (n === 1 ? one : many);
}

/** The daemon's queue at a glance (a `queue` reply), for the device's queue line while it has no job. */
function busyText(q) {
    if (!q.running && !q.waiting) {
        return "daemon idle";
    }
    var text = "daemon busy: " + (q.running ? "1 job running" + (q.job ? " (yours, " + Math.round(q.fraction * 100) + "%)" : "")
        : "nothing running");
    if (q.waiting) {
        text += ", " + q.waiting + " waiting" + (q.yoursWaiting ? " (" + q.yoursWaiting + " yours)" : "");
    }
    return text;
}

/** What a finished job made, for the status line: "done: 4 stems by demucs (htdemucs)". `made` is the job's
 * `made` reply, or null when it was lost (UDP) or the daemon predates it. */
function doneText(kind, paths, made, stem) {
    var what;
    var midi = splitPaths(paths).midi.length;
    paths = splitPaths(paths).audio; // each MIDI file goes with its audio file
    if (kind === "separate") {
        what = plural(paths.length, "stem", "stems");
    } else if (kind === "vary") {
        what = plural(paths.length, "variation", "variations");
    } else {
        what = paths.length === 1 ? (stem || "part") : plural(paths.length, "take", "takes") + " of " + (stem || "the part");
    }
    var by = made && made.engine ? " by " + made.engine + (made.model ? " (" + made.model + ")" : "") : "";
    return "done: " + what + (midi ? " with MIDI" : "") + by;
}

exports.quartersPerBar = quartersPerBar;
exports.barsOf = barsOf;
exports.beatsToSeconds = beatsToSeconds;
exports.secondsText = secondsText;
exports.clampInt = clampInt;
exports.makeSession = makeSession;
exports.requestId = requestId;
exports.atomText = atomText;
exports.atomNumber = atomNumber;
exports.clipPlace = clipPlace;
exports.canInsert = canInsert;
exports.timing = timing;
exports.parseWarpMarkers = parseWarpMarkers;
exports.warpSeconds = warpSeconds;
exports.fileSection = fileSection;
exports.contextStart = contextStart;
exports.sectionNote = sectionNote;
exports.buildRequest = buildRequest;
exports.parseReply = parseReply;
exports.baseName = baseName;
exports.folderOf = folderOf;
exports.describeFile = describeFile;
exports.isMidiPath = isMidiPath;
exports.splitPaths = splitPaths;
exports.pairMidi = pairMidi;
exports.planInsertion = planInsertion;
exports.plainError = plainError;
exports.queueText = queueText;
exports.busyText = busyText;
exports.doneText = doneText;
exports.PREFIX = PREFIX;
exports.GENERATE_STEMS = GENERATE_STEMS;
