// stembridge.js: the Stembridge Max for Live device's script, for Max's classic [js] object (ES5 only: no let,
// const, arrow functions or template strings).
//
// This is the Max glue: Live state through LiveAPI, the messages from the UI and from [udpreceive], and the
// insertion of results with Track.create_audio_clip / ClipSlot.create_audio_clip (Live 12.0.5+), and of MIDI
// files (with the MIDI toggle on) with ClipSlot.create_clip / Track.create_midi_clip and Clip.add_new_notes. The
// pure logic (timing math, requests, replies, insertion planning) is in stembridge_core.js, the MIDI file reader
// in stembridge_midi.js; tests run them under node as they run this file (tests/m4l/harness.js, with a stub
// LiveAPI and File).
//
// Outlets: 0 -> [udpsend] (OSC messages, and `host` / `port`), 1 -> [udpreceive] (`port`), 2 -> the UI
// ([route] by the first word; the second word is the UI object's own command: set, clear, append...).
// The OSC contract is docs/PROTOCOL.md.

autowatch = 1;
inlets = 1;
outlets = 3;

var core = require("stembridge_core");
var smf = require("stembridge_midi");

var OUT_OSC = 0;
var OUT_LISTEN = 1;
var OUT_UI = 2;

var SOURCES = ["clip", "range"];
var DEFAULT_HOST = "127.0.0.1";
var DEFAULT_PORT = 9977;
var PING_EVERY_MS = 5000;
var PONG_TIMEOUT_MS = 2500;
var RESEND_AFTER_MS = 2000; // no `accepted`: send the same request again (same id, so it never runs twice)
var MAX_RESENDS = 3;
var STATUS_AFTER_MS = 4000; // a job quiet for this long is asked for its status (a reply may have been lost)
var BEAT_EPSILON = 1e-6;
var READ_CHUNK = 4096; // bytes per File.readbytes call

var settings = {
    host: DEFAULT_HOST,
    port: DEFAULT_PORT,
    stem: "bass",
    source: "clip",
    prompt: "",
    bars: 8,
    variations: 1,
    seed: 0,
    strength: 0.5,
    engine: "auto",
    model: "default",
    midi: false,
    token: ""
};
var state = {
    session: "",
    counter: 0,
    replyPort: 0,
    connected: false,
    lastPingId: "",
    lastPingAt: 0,
    lastPongAt: 0,
    lastQueueId: "",
    engines: [],
    jobs: {},
    current: "",
    lastFolder: "",
    ready: false
};
var ticker = null;
var selectionWatcher = null;

function now() {
    return new Date().getTime();
}

function ui() {
    outlet(OUT_UI, Array.prototype.slice.call(arguments));
}

function say(line) {
    ui("status", "set", line);
}

function showError(line) {
    ui("error", "set", line);
    post("stembridge: " + line + "\n");
}

function sendOsc(message) {
    outlet(OUT_OSC, message);
}

function nextId() {
    state.counter += 1;
    return core.requestId(state.session, state.counter);
}

/** Called by [live.thisdevice] once the device is in the Live set (LiveAPI is usable from then on), and again
 * each time Live loads a preset into the device or the device is saved. The first call starts the session, the
 * reply port, the selection watcher and the clock; a later one only shows the selected clip again, so there is
 * never a second clock (pinging and resending twice) and jobs in flight keep their ids and their reply port. */
function init() {
    if (state.ready) {
        refreshClip();
        return;
    }
    state.session = core.makeSession(now(), Math.random());
    listenOn(40000 + Math.floor(Math.random() * 10000));
    sendOsc(["host", settings.host]);
    sendOsc(["port", settings.port]);
    state.ready = true;
    selectionWatcher = new LiveAPI(onSelection, "live_set view");
    selectionWatcher.property = "detail_clip";
    ticker = new Task(tick, this);
    ticker.interval = 500;
    ticker.repeat();
    ping();
    refreshClip();
}

function listenOn(port) {
    state.replyPort = port;
    outlet(OUT_LISTEN, ["port", port]);
}

/** `daemon <host> <port>`: where the daemon listens. The same place again (a preset recalling the stored Port)
 * changes nothing. */
function daemon(host, port) {
    var newHost = core.atomText(host);
    var newPort = core.clampInt(port, 1, 65535);
    if (newHost === settings.host && newPort === settings.port) {
        return;
    }
    settings.host = newHost;
    settings.port = newPort;
    sendOsc(["host", settings.host]);
    sendOsc(["port", settings.port]);
    state.connected = false;
    if (state.ready) {
        ping(); // before init (a stored Port value arriving at load) there is no reply port yet
    }
}

function daemonport(port) {
    daemon(settings.host, port);
}

function token(secret) {
    settings.token = secret === undefined ? "" : core.atomText(secret);
}

function stem(value) {
    var index = Number(value);
    settings.stem = isNaN(index) ? core.atomText(value) : core.GENERATE_STEMS[core.clampInt(index, 0, core.GENERATE_STEMS.length - 1)];
}

function source(value) {
    var index = Number(value);
    settings.source = isNaN(index) ? core.atomText(value) : SOURCES[core.clampInt(index, 0, SOURCES.length - 1)];
    refreshClip();
}

function prompt() {
    var words = Array.prototype.slice.call(arguments);
    if (words.length && words[0] === "text") {
        words.shift(); // [textedit] puts `text` before what was typed
    }
    settings.prompt = words.join(" ");
}

function bars(value) {
    settings.bars = core.clampInt(value, 1, 32);
}

function variations(value) {
    settings.variations = core.clampInt(value, 1, 8);
}

function seed(value) {
    settings.seed = core.clampInt(value, 0, 2147483647);
}

function strength(value) {
    var v = Number(value);
    settings.strength = isNaN(v) ? 0.5 : Math.min(1, Math.max(0, v));
}

/** The MIDI toggle: 1 asks for a MIDI file beside each audio file, which lands in a MIDI clip beside its clip. */
function midi(value) {
    settings.midi = Number(value) === 1;
}

function engine(name) {
    settings.engine = core.atomText(name);
}

function model(name) {
    settings.model = core.atomText(name);
}

function ping() {
    state.lastPingId = nextId();
    state.lastPingAt = now();
    sendOsc(core.buildRequest({ kind: "ping", replyPort: state.replyPort, id: state.lastPingId, token: settings.token }));
}

function askModels() {
    sendOsc(core.buildRequest({ kind: "models", replyPort: state.replyPort, id: nextId(), token: settings.token }));
}

/** Ask how busy the daemon is (shown on the queue line while the device has no job of its own). */
function askQueue() {
    state.lastQueueId = nextId();
    sendOsc(core.buildRequest({ kind: "queue", replyPort: state.replyPort, id: state.lastQueueId, token: settings.token }));
}

/** Whether the device's last job is still going (its queue line is then the job's). */
function busyWithJob() {
    var job = state.jobs[state.current];
    return !!job && !job.finished;
}

// --- Live state ---------------------------------------------------------------------------------------

function readSong() {
    var song = new LiveAPI("live_set");
    return {
        tempo: core.atomNumber(song.get("tempo")),
        numerator: core.atomNumber(song.get("signature_numerator")),
        denominator: core.atomNumber(song.get("signature_denominator")),
        loopStart: core.atomNumber(song.get("loop_start")),
        loopLength: core.atomNumber(song.get("loop_length"))
    };
}

function liveVersion() {
    var app = new LiveAPI("live_app");
    return {
        major: core.atomNumber(app.call("get_major_version")),
        minor: core.atomNumber(app.call("get_minor_version")),
        bugfix: core.atomNumber(app.call("get_bugfix_version"))
    };
}

/** A number property that older Lives may lack (NaN then, rather than an error). */
function optionalNumber(api, property) {
    try {
        return core.atomNumber(api.get(property)); // NaN for the empty answer to an unknown property
    } catch (err) {
        return NaN;
    }
}

/** What an audio clip plays of its file: its markers (beats if warped, seconds if not: see fileSection in
 * stembridge_core.js), warp markers, the file's length, and from them `section`. `info` holds arrangement,
 * startBeats and lengthBeats (a Session clip's length in beats means nothing when it is unwarped: it is set
 * here from the seconds it plays). */
function readClipFile(clip, info, tempo) {
    info.path = core.atomText(clip.get("file_path"));
    info.warping = core.atomNumber(clip.get("warping")) === 1;
    info.looping = core.atomNumber(clip.get("looping")) === 1;
    info.startMarker = core.atomNumber(clip.get("start_marker"));
    info.endMarker = core.atomNumber(clip.get("end_marker"));
    info.loopStart = core.atomNumber(clip.get("loop_start"));
    info.loopEnd = core.atomNumber(clip.get("loop_end"));
    info.warpMarkers = [];
    if (info.warping) {
        try {
            info.warpMarkers = core.parseWarpMarkers(clip.get("warp_markers")); // Live 11 and later
        } catch (err) {
            info.warpMarkers = [];
        }
    }
    info.fileSeconds = optionalNumber(clip, "sample_length") / optionalNumber(clip, "sample_rate");
    info.section = core.fileSection(info, tempo);
    if (!info.arrangement && !info.warping && info.section.exact) {
        info.lengthBeats = info.section.length * tempo / 60.0;
    }
    return info;
}

/** The clip shown in Live's detail view, as the device needs it, or {problem} in plain words. */
function readSelectedClip(song) {
    var clip = new LiveAPI("live_set view detail_clip");
    if (!clip.id || Number(clip.id) === 0) {
        return { problem: "Select an audio clip first (click it so it shows in Live's clip view)." };
    }
    if (core.atomNumber(clip.get("is_audio_clip")) !== 1) {
        return { problem: "The selected clip is a MIDI clip; select an audio clip." };
    }
    var place = core.clipPlace(clip.unquotedpath || clip.path);
    if (place === null) {
        return { problem: "Cannot tell which track the selected clip is on." };
    }
    var info = {
        id: Number(clip.id),
        name: core.atomText(clip.get("name")),
        track: place.track,
        slot: place.slot,
        arrangement: place.arrangement
    };
    if (place.arrangement) {
        info.startBeats = core.atomNumber(clip.get("start_time"));
        info.lengthBeats = core.atomNumber(clip.get("end_time")) - info.startBeats;
    } else {
        info.startBeats = 0; // a Session clip has no place on the timeline; its files start at 0 s
        info.lengthBeats = core.atomNumber(clip.get("length"));
    }
    return readClipFile(clip, info, song.tempo);
}

/** The audio clips playing where the Arrangement loop brace starts, each with where that is in its file
 * (`context_start`: bar 1 of the range). A clip that starts later, or one that plays its file stretched from a
 * point inside it, is left out (`skipped`). */
function readRange(song) {
    var live = new LiveAPI("live_set");
    var count = live.getcount("tracks");
    var found = { context: [], contextStart: [], skipped: [], lastTrack: -1, lastTrackId: 0 };
    var t, c;
    for (t = 0; t < count; t++) {
        var track = new LiveAPI("live_set tracks " + t);
        if (core.atomNumber(track.get("is_foldable")) === 1 || core.atomNumber(track.get("has_audio_input")) !== 1) {
            continue; // group tracks and MIDI tracks hold no audio clips
        }
        var clips = track.getcount("arrangement_clips");
        for (c = 0; c < clips; c++) {
            var clip = new LiveAPI("live_set tracks " + t + " arrangement_clips " + c);
            var start = core.atomNumber(clip.get("start_time"));
            var end = core.atomNumber(clip.get("end_time"));
            if (end <= song.loopStart + BEAT_EPSILON || start >= song.loopStart + song.loopLength - BEAT_EPSILON) {
                continue;
            }
            var info = readClipFile(clip, { arrangement: true, startBeats: start, lengthBeats: end - start }, song.tempo);
            var from = core.contextStart(info, info.section, song.loopStart, song.tempo);
            if (from !== null) {
                found.context.push(info.path);
                found.contextStart.push(from);
                found.lastTrack = t;
                found.lastTrackId = Number(track.id);
            } else {
                found.skipped.push(core.atomText(clip.get("name")));
            }
        }
    }
    return found;
}

function onSelection() {
    if (state.ready) {
        refreshClip();
    }
}

/** Show the selected clip (or loop range) and set the Bars box from it. The box is a hidden parameter, so
 * moving it here adds nothing to automation or undo. */
function refreshClip() {
    if (!state.ready) {
        return;
    }
    var song = readSong();
    if (settings.source === "range") {
        var r = core.timing(song, { startBeats: song.loopStart, lengthBeats: song.loopLength });
        ui("clip", "set", "Loop range: " + r.bars + " bars from " + core.secondsText(r.positionSeconds) + " s at " +
            song.tempo + " bpm, " + r.timesig);
        setBars(r.bars);
        return;
    }
    var clip = readSelectedClip(song);
    if (clip.problem) {
        ui("clip", "set", clip.problem);
        return;
    }
    var t = core.timing(song, clip);
    var part = clip.section.exact && !clip.section.whole ? " from " + Math.round(clip.section.start * 1000) / 1000 + " s in" : "";
    ui("clip", "set", core.baseName(clip.path) + part + ": " + t.bars + (t.exact ? "" : " (rounded)") + " bars at " +
        song.tempo + " bpm, " + t.timesig + (clip.arrangement ? ", at " + core.secondsText(t.positionSeconds) + " s" : ""));
    setBars(t.bars);
}

function setBars(value) {
    settings.bars = core.clampInt(value, 1, 32);
    ui("bars", "set", settings.bars);
}

// --- actions ------------------------------------------------------------------------------------------

function separate(value) {
    if (value === 0) {
        return; // the button's release
    }
    var song = readSong();
    var clip = readSelectedClip(song);
    if (clip.problem) {
        return showError(clip.problem);
    }
    var t = core.timing(song, clip);
    warnAbout(clip, "separate");
    start({ kind: "separate", path: clip.path, section: exactSection(clip), positionSeconds: t.positionSeconds },
        { kind: "separate", arrangement: clip.arrangement, track: clip.track, slot: clip.slot, positionBeats: clip.startBeats, anchorId: clip.id,
            tempo: song.tempo, lengthBeats: separatedBeats(clip, song.tempo) });
}

function generate(value) {
    if (value === 0) {
        return;
    }
    var song = readSong();
    var t, target, context, contextStart;
    if (settings.source === "range") {
        if (song.loopLength <= 0) {
            return showError("Set the Arrangement loop brace around the bars to fill first.");
        }
        var range = readRange(song);
        t = core.timing(song, { startBeats: song.loopStart, lengthBeats: song.loopLength });
        context = range.context;
        contextStart = range.contextStart;
        var anchor = range.lastTrack >= 0 ? range.lastTrack : new LiveAPI("live_set").getcount("tracks") - 1;
        target = { kind: "generate", arrangement: true, track: anchor, slot: -1, positionBeats: song.loopStart, stem: settings.stem,
            anchorId: range.lastTrackId, tempo: song.tempo, lengthBeats: barsBeats(song, settings.bars) };
        if (range.skipped.length) {
            say("Left out (they start after the loop start, or play their files stretched from inside them): " +
                range.skipped.join(", "));
        }
    } else {
        var clip = readSelectedClip(song);
        if (clip.problem) {
            return showError(clip.problem);
        }
        t = core.timing(song, clip);
        context = [clip.path];
        contextStart = [clip.section.exact ? clip.section.start : 0]; // bar 1 is where the clip starts playing
        warnAbout(clip, "generate");
        target = { kind: "generate", arrangement: clip.arrangement, track: clip.track, slot: clip.slot, positionBeats: clip.startBeats, stem: settings.stem,
            anchorId: clip.id, tempo: song.tempo, lengthBeats: barsBeats(song, settings.bars) };
    }
    start({
        kind: "generate", stem: settings.stem, context: context, contextStart: contextStart, bpm: t.bpm, bars: settings.bars,
        timesig: t.timesig, positionSeconds: t.positionSeconds, prompt: settings.prompt, seed: settings.seed,
        variations: settings.variations
    }, target);
}

function vary(value) {
    if (value === 0) {
        return;
    }
    var song = readSong();
    var clip = readSelectedClip(song);
    if (clip.problem) {
        return showError(clip.problem);
    }
    var t = core.timing(song, clip);
    warnAbout(clip, "vary");
    start({
        kind: "vary", path: clip.path, section: exactSection(clip), bpm: t.bpm, bars: t.bars, timesig: t.timesig,
        positionSeconds: t.positionSeconds, seed: settings.seed, variations: settings.variations,
        strength: settings.strength
    }, { kind: "vary", arrangement: clip.arrangement, track: clip.track, slot: clip.slot, positionBeats: clip.startBeats, name: clip.name, anchorId: clip.id,
        tempo: song.tempo, lengthBeats: barsBeats(song, t.bars) });
}

/** Beats in `count` bars of the set's time signature: how long a generated or varied part (and its MIDI) is. */
function barsBeats(song, count) {
    return count * core.quartersPerBar(song.numerator, song.denominator);
}

/** Beats the stems of a Separate last: the part of the file the clip plays, or the clip when that is not exact. */
function separatedBeats(clip, tempo) {
    return clip.section.exact ? clip.section.length * tempo / 60.0 : clip.lengthBeats;
}

/** The part of the file to send (`start`, `length`), or null for the whole file. */
function exactSection(clip) {
    return clip.section.exact && !clip.section.whole ? clip.section : null;
}

function warnAbout(clip, kind) {
    var note = core.sectionNote(clip, clip.section, kind);
    say(note); // an empty note clears the one of an earlier job
}

function start(request, target) {
    ui("error", "set", "");
    if (!state.connected) {
        showError("No answer from stembridge at " + settings.host + ":" + settings.port +
            " yet; sending anyway. Start it with `stembridge serve`.");
    }
    request.id = nextId();
    request.replyPort = state.replyPort;
    request.engine = settings.engine;
    request.model = settings.model;
    request.token = settings.token;
    request.midi = settings.midi;
    var message = core.buildRequest(request);
    state.jobs[request.id] = {
        id: request.id, message: message, target: target, sentAt: now(), heardAt: 0, resends: 0,
        accepted: false, finished: false, fraction: 0, midi: request.midi
    };
    state.current = request.id;
    ui("progress", "set", 0);
    ui("queue", "set", "sent");
    ui("stage", "set", request.kind);
    sendOsc(message);
}

function cancel(value) {
    if (value === 0) {
        return;
    }
    var job = state.jobs[state.current];
    if (!job || job.finished) {
        return say("Nothing to cancel.");
    }
    sendOsc(core.buildRequest({ kind: "cancel", replyPort: state.replyPort, id: nextId(), target: job.id, token: settings.token }));
    ui("stage", "set", "cancelling");
}

function reconnect(value) {
    if (value === 0) {
        return;
    }
    listenOn(40000 + Math.floor(Math.random() * 10000)); // the old port may be taken by another program
    ping(); // its pong asks the queue again
}

/** Open the folder of the last results in the Finder / Explorer. */
function showfolder(value) {
    if (value === 0 || !state.lastFolder) {
        return;
    }
    var folder = state.lastFolder.replace(/\\/g, "/");
    messnamed("max", "launchbrowser", "file://" + (folder.charAt(0) === "/" ? "" : "/") + folder);
}

// --- replies ------------------------------------------------------------------------------------------

/** Every message from [udpreceive]: the OSC address is the message name. */
function anything() {
    var reply = core.parseReply(messagename, Array.prototype.slice.call(arguments));
    if (reply !== null) {
        handle(reply);
    }
}

function handle(reply) {
    if (reply.type === "pong") {
        return onPong(reply);
    }
    if (reply.type === "models") {
        return onModels(reply);
    }
    if (reply.type === "queue") {
        return onQueue(reply);
    }
    var job = state.jobs[reply.id];
    if (!job) {
        if (reply.type === "error") {
            showError(core.plainError(reply.code, reply.message)); // a refused ping, models or cancel
        }
        return;
    }
    job.heardAt = now();
    if (job.finished) {
        return;
    }
    if (reply.type === "accepted") {
        job.accepted = true;
        ui("error", "set", "");
        ui("queue", "set", core.queueText(reply.queue));
    } else if (reply.type === "progress") {
        job.accepted = true;
        job.fraction = Math.max(job.fraction, reply.fraction);
        ui("progress", "set", job.fraction);
        ui("queue", "set", "running");
        ui("stage", "set", reply.stage);
    } else if (reply.type === "made") {
        job.made = reply; // right before `done`: which engine and model, and notes
    } else if (reply.type === "done") {
        finish(job, reply.paths);
    } else if (reply.type === "error") {
        fail(job, reply.code, reply.message);
    } else if (reply.type === "state") {
        onState(job, reply);
    }
}

function onPong(reply) {
    state.connected = true;
    if (!busyWithJob()) {
        askQueue(); // on connecting, and with every ping while idle, so the queue line stays current
    }
    state.lastPongAt = now();
    var engines = ["auto"].concat(reply.engines);
    ui("connection", "set", "Connected: stembridge " + reply.version + " at " + settings.host + ":" + settings.port);
    if (engines.join(" ") !== state.engines.join(" ")) {
        state.engines = engines;
        ui("engines", "clear");
        for (var i = 0; i < engines.length; i++) {
            ui("engines", "append", engines[i]);
        }
        askModels();
    }
}

function onModels(reply) {
    var names = ["default"];
    var lines = [];
    for (var i = 0; i < reply.models.length; i++) {
        var m = reply.models[i];
        if (m.available) {
            names.push(m.name);
        }
        lines.push(m.name + " (" + m.engine + ", " + m.tasks.join("/") + ")" + (m.available ? "" : ": not installed"));
    }
    ui("models", "set", lines.join("; "));
    ui("modelmenu", "clear");
    for (var k = 0; k < names.length; k++) {
        ui("modelmenu", "append", names[k]);
    }
}

function onQueue(reply) {
    if (reply.id !== state.lastQueueId || busyWithJob()) {
        return; // a late answer, or the device's own job has the queue line now
    }
    ui("queue", "set", core.busyText(reply));
}

function onState(job, reply) {
    if (reply.state === "done") {
        finish(job, reply.paths); // the `done` was lost; the status answer carries the files
    } else if (reply.state === "failed") {
        fail(job, reply.code, reply.message);
    } else if (reply.state === "cancelled") {
        ui("stage", "set", "cancelled");
    } else if (reply.state === "running" || reply.state === "queued") {
        job.accepted = true;
        ui("queue", "set", reply.state === "running" ? "running" : "queued");
    } else if (reply.state === "unknown" && job.accepted) {
        fail(job, "error", "the daemon no longer knows this job (was it restarted from another state folder?)");
    }
}

function fail(job, code, message) {
    job.finished = true;
    ui("stage", "set", code === "cancelled" ? "cancelled" : "failed");
    ui("queue", "set", "");
    showError(core.plainError(code, message));
}

function finish(job, paths) {
    job.finished = true;
    ui("progress", "set", 1);
    ui("queue", "set", "");
    ui("stage", "set", "done");
    var split = core.splitPaths(paths);
    if (!job.midi) {
        split.midi = []; // the builtin engine writes its notes every time: clips only when MIDI was asked for
    }
    if (!split.audio.length) {
        return showError("The job finished without files.");
    }
    state.lastFolder = core.folderOf(paths[0]);
    var v = liveVersion();
    var listing = "Folder: " + state.lastFolder + "  Files: " + paths.map(core.baseName).join(", ");
    ui("files", "set", listing);
    var line = core.doneText(job.target.kind, paths, job.made || null, job.target.stem);
    if (core.canInsert(v.major, v.minor, v.bugfix)) {
        var midi = readMidiFiles(split.midi);
        var target = relocate(job.target);
        insert(core.planInsertion(target, split.audio.concat(midi.paths), sessionState(target)), midi.files, target);
        line += ".";
        if (midi.problems.length) {
            showError("Could not read " + midi.problems.join("; ") + ": its clip was left out (the audio is in).");
        }
    } else {
        line += "; Live " + v.major + "." + v.minor + "." + v.bugfix + " cannot insert clips from a device (Live 12.0.5 " +
            "can): drag the files from the folder (Show folder).";
    }
    var notes = job.made ? job.made.notes : [];
    for (var i = 0; i < notes.length; i++) {
        post("stembridge: note: " + notes[i] + "\n");
    }
    say(notes.length ? line + " Note: " + notes.join(" ") : line); // the notes last, where they stay visible
}

/** The bytes of a file (numbers 0..255) through Max's File object. */
function readFileBytes(path) {
    var f = new File(path, "read");
    var open = typeof f.isopen === "function" ? f.isopen() : f.isopen;
    if (!open) {
        throw new Error("cannot open it");
    }
    var bytes = [];
    try {
        while (f.position < f.eof) {
            var chunk = f.readbytes(Math.min(READ_CHUNK, f.eof - f.position));
            if (!chunk || !chunk.length) {
                break;
            }
            for (var i = 0; i < chunk.length; i++) {
                bytes.push(chunk[i] & 0xff);
            }
        }
    } finally {
        f.close();
    }
    return bytes;
}

/** The MIDI files of a job, read and parsed: {paths (the readable ones), files: {path: parsed}, problems: [...]}. */
function readMidiFiles(paths) {
    var read = { paths: [], files: {}, problems: [] };
    for (var i = 0; i < paths.length; i++) {
        try {
            read.files[paths[i]] = smf.parseSmf(readFileBytes(paths[i]));
            read.paths.push(paths[i]);
        } catch (err) {
            read.problems.push(core.baseName(paths[i]) + " (" + (err && err.message ? err.message : err) + ")");
        }
    }
    return read;
}

/** The target with the track and slot where its clip (or anchor track) is now: tracks may have been added or
 * moved while the job ran. Live's ids stay with their objects; a deleted one leaves the target as it was. */
function relocate(target) {
    if (!target.anchorId) {
        return target;
    }
    var api = new LiveAPI("id " + target.anchorId);
    var place = Number(api.id) === 0 ? null : core.clipPlace(api.unquotedpath || api.path);
    if (place === null) {
        return target;
    }
    var moved = {};
    for (var key in target) {
        if (target.hasOwnProperty(key)) {
            moved[key] = target[key];
        }
    }
    moved.track = place.track;
    if (place.slot >= 0) {
        moved.slot = place.slot;
    }
    return moved;
}

function sessionState(target) {
    if (target.arrangement) {
        return {};
    }
    var song = new LiveAPI("live_set");
    var info = { sceneCount: song.getcount("scenes"), slotsUsed: slotsUsed(target.track) };
    if (target.track + 1 < song.getcount("tracks")) {
        var next = new LiveAPI("live_set tracks " + (target.track + 1));
        info.next = { midi: core.atomNumber(next.get("has_midi_input")) === 1, slotsUsed: slotsUsed(target.track + 1) };
    }
    return info;
}

/** Which clip slots of a track hold a clip. */
function slotsUsed(index) {
    var slots = [];
    var count = new LiveAPI("live_set tracks " + index).getcount("clip_slots");
    for (var s = 0; s < count; s++) {
        slots.push(core.atomNumber(new LiveAPI("live_set tracks " + index + " clip_slots " + s).get("has_clip")) === 1);
    }
    return slots;
}

/** Carry out planned operations with LiveAPI (each one undoable in Live as one step). `midiFiles` holds the
 * parsed MIDI files by path; `target` the job's tempo, at which their notes are placed. */
function insert(ops, midiFiles, target) {
    var song = new LiveAPI("live_set");
    for (var i = 0; i < ops.length; i++) {
        var op = ops[i];
        if (op.op === "create_audio_track" || op.op === "create_midi_track") {
            song.call(op.op, op.index);
            new LiveAPI("live_set tracks " + op.index).set("name", op.name);
        } else if (op.op === "create_scene") {
            song.call("create_scene", -1);
        } else if (op.op === "arrangement_clip") {
            new LiveAPI("live_set tracks " + op.track).call("create_audio_clip", op.path, op.position);
        } else if (op.op === "session_clip") {
            new LiveAPI("live_set tracks " + op.track + " clip_slots " + op.slot).call("create_audio_clip", op.path);
        } else if (op.op === "session_midi_clip") {
            var slotPath = "live_set tracks " + op.track + " clip_slots " + op.slot;
            new LiveAPI(slotPath).call("create_clip", op.length);
            fillMidiClip(new LiveAPI(slotPath + " clip"), op, midiFiles[op.path], target.tempo);
        } else if (op.op === "arrangement_midi_clip") {
            var track = new LiveAPI("live_set tracks " + op.track);
            track.call("create_midi_clip", op.position, op.length);
            fillMidiClip(arrangementClipAt(op.track, op.position), op, midiFiles[op.path], target.tempo);
        }
    }
}

/** The Arrangement clip of a track that starts at `position` (beats), found by its place. */
function arrangementClipAt(trackIndex, position) {
    var count = new LiveAPI("live_set tracks " + trackIndex).getcount("arrangement_clips");
    for (var c = 0; c < count; c++) {
        var clip = new LiveAPI("live_set tracks " + trackIndex + " arrangement_clips " + c);
        if (Math.abs(core.atomNumber(clip.get("start_time")) - position) < BEAT_EPSILON) {
            return clip;
        }
    }
    return null;
}

/** Names a new MIDI clip after its file and writes the file's notes into it (LOM Clip.add_new_notes takes a
 * dictionary {notes: [{pitch, start_time, duration, velocity, mute}]}; Max's js passes an object as one). */
function fillMidiClip(clip, op, parsed, tempo) {
    if (!clip || Number(clip.id) === 0) {
        return showError("Live made no MIDI clip for " + core.baseName(op.path) + ".");
    }
    clip.set("name", core.baseName(op.path).replace(/\.midi?$/i, ""));
    var notes = smf.liveNotes(parsed, tempo, op.length);
    if (notes.notes.length) {
        clip.call("add_new_notes", notes);
    }
}

// --- the clock: pings, lost packets -------------------------------------------------------------------

function tick() {
    var t = now();
    if (state.lastPingAt && state.lastPongAt < state.lastPingAt && t - state.lastPingAt > PONG_TIMEOUT_MS) {
        if (state.connected || state.lastPongAt === 0) {
            ui("connection", "set", "No answer from stembridge at " + settings.host + ":" + settings.port +
                " (start it with `stembridge serve`)");
        }
        state.connected = false;
    }
    if (t - state.lastPingAt >= PING_EVERY_MS) {
        ping();
    }
    for (var id in state.jobs) {
        if (!state.jobs.hasOwnProperty(id)) {
            continue;
        }
        var job = state.jobs[id];
        if (job.finished) {
            continue;
        }
        if (!job.accepted && !job.heardAt && t - job.sentAt > RESEND_AFTER_MS * (job.resends + 1)) {
            if (job.resends < MAX_RESENDS) {
                job.resends += 1;
                sendOsc(job.message); // same id: the daemon never runs it twice
            } else {
                fail(job, "error", "no answer from the daemon at " + settings.host + ":" + settings.port +
                    "; is `stembridge serve` running?");
            }
        } else if (job.accepted && t - Math.max(job.heardAt, job.sentAt) > STATUS_AFTER_MS) {
            job.heardAt = t;
            sendOsc(core.buildRequest({ kind: "status", replyPort: state.replyPort, id: nextId(), target: job.id, token: settings.token }));
        }
    }
}

function notifydeleted() {
    if (ticker) {
        ticker.cancel();
    }
}

// Max calls a function of the script for every message of that name; these are not messages from the patch.
var INTERNAL = [
    now, ui, say, showError, sendOsc, nextId, listenOn, askModels, askQueue, busyWithJob, readSong, liveVersion,
    optionalNumber, readClipFile, readSelectedClip, readRange, onSelection, refreshClip, setBars, exactSection,
    warnAbout, start, handle, onPong, onModels, onQueue, onState, fail, finish, relocate, sessionState, insert, tick,
    barsBeats, separatedBeats, readFileBytes, readMidiFiles, slotsUsed, arrangementClipAt, fillMidiClip
];
for (var internal = 0; internal < INTERNAL.length; internal++) {
    INTERNAL[internal].local = 1;
}
