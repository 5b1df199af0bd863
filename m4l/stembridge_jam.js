// stembridge_jam.js: the StembridgeJam Max for Live device's script, for Max's classic [js] object (ES5 only).
//
// The Max glue of a live jam with the daemon (docs/PROTOCOL.md, /stembridge/jam/*): it takes Live's transport
// from [plugsync~] (running, beats, samples per beat, time signature) and the sample rate from [dspstate~], asks
// the scheduling logic (stembridge_jam_core.js) what to do at each tick and each reply, and does it: opens the
// gate that lets the patch start [record~] at each cycle line, writes each cycle's recording with the buffer's
// `writewave` and sends it, loads each part into one of two players' [buffer~]s with `replace`, shows the margin
// and the engine's advice, and at the end puts the whole performance in a new audio track at the jam's start
// (Track.create_audio_clip, Live 12.0.5+). The patch does the timing: the players follow transport-locked
// [phasor~]s, so a part starts on its bar line to the sample, whatever moment this script loaded it.
//
// Outlets: 0 -> [udpsend] (OSC, and `host` / `port`), 1 -> [udpreceive] (`port`), 2 -> [route] by the first
// word: the UI lines (status, margin, advice) and the patch's objects (recgate, recbuf, recend, cycle, pair,
// buf0, buf1, len0, len1).

autowatch = 1;
inlets = 1;
outlets = 3;

var core = require("stembridge_core");
var jamcore = require("stembridge_jam_core");

var OUT_OSC = 0;
var OUT_LISTEN = 1;
var OUT_UI = 2;

var STEMS = ["bass", "drums", "keys", "pad", "lead", "vocals", "other"];
var ON_LATE = ["repeat", "rest"];
var DEFAULT_HOST = "127.0.0.1";
var DEFAULT_PORT = 9977;
var ANSWER_WITHIN_MS = 5000; // no `started` by then: the daemon is not there
var CHANNELS = 2;
var CYCLE_FILES = 3; // the recordings rotate through this many files per session
var PLAYERS = [{ buffer: "buf0", length: "len0" }, { buffer: "buf1", length: "len1" }]; // by grid parity

var settings = {
    host: DEFAULT_HOST,
    port: DEFAULT_PORT,
    stem: "bass",
    bars: 4,
    lag: 0,
    lead: 1.0,
    onLate: "repeat",
    prompt: "",
    take: true,
    folder: ""
};
var state = {
    ready: false,
    device: "",
    counter: 0,
    replyPort: 0,
    startId: "",
    stopId: "",
    session: "",
    askedAt: 0,
    takeBeats: null,
    captureSamples: 0,
    resize: false
};
var transport = { playing: false, beats: 0, samplesPerBeat: 0, sampleRate: 44100, num: 4, den: 4 };
var jam = null;
var clock = null;

function now() {
    return new Date().getTime();
}

function ui() {
    outlet(OUT_UI, Array.prototype.slice.call(arguments));
}

function say(line) {
    ui("status", "set", line);
}

function sendOsc(message) {
    outlet(OUT_OSC, message);
}

function nextId() {
    state.counter += 1;
    return core.requestId(state.device, state.counter);
}

/** [live.thisdevice]: the device is in the set. A second bang (a preset, a save) changes nothing. */
function init() {
    if (state.ready) {
        return;
    }
    state.ready = true;
    state.device = core.makeSession(now(), Math.random());
    state.replyPort = 40000 + Math.floor(Math.random() * 10000);
    outlet(OUT_LISTEN, ["port", state.replyPort]);
    sendOsc(["host", settings.host]);
    sendOsc(["port", settings.port]);
    if (!settings.folder && this.patcher && this.patcher.filepath) {
        settings.folder = folderOf(String(this.patcher.filepath));
    }
    clock = new Task(watch, this);
    clock.interval = 1000;
    clock.repeat();
    say("Ready: arm to jam with stembridge at " + settings.host + ":" + settings.port);
}

function folderOf(filePath) {
    var cut = filePath.lastIndexOf("/");
    return cut > 0 ? filePath.substring(0, cut) : filePath;
}

// --- settings (the device's boxes) --------------------------------------------------------------------------

function stem(index) {
    settings.stem = STEMS[core.clampInt(index, 0, STEMS.length - 1)];
}

function bars(n) {
    settings.bars = core.clampInt(n, 1, 16);
}

function lag(n) {
    settings.lag = core.clampInt(n, 0, 2);
}

function lead(quarters) {
    settings.lead = Number(quarters);
}

function onlate(index) {
    settings.onLate = ON_LATE[core.clampInt(index, 0, 1)];
}

function take(on) {
    settings.take = Number(on) !== 0;
}

/** `prompt text <words...>` from the [textedit]. */
function prompt() {
    var words = Array.prototype.slice.call(arguments);
    if (words[0] === "text") {
        words.shift();
    }
    settings.prompt = words.join(" ");
}

function folder(path) {
    settings.folder = core.atomText(Array.prototype.slice.call(arguments).join(" "));
}

function port(n) {
    settings.port = core.clampInt(n, 1, 65535);
    sendOsc(["port", settings.port]);
}

function daemon(host, p) {
    settings.host = core.atomText(host);
    sendOsc(["host", settings.host]);
    port(p);
}

// --- the transport, from [plugsync~] and [dspstate~] --------------------------------------------------------

function playing(v) {
    transport.playing = Number(v) !== 0;
    tick();
}

function spb(v) {
    transport.samplesPerBeat = Number(v);
}

function samplerate(v) {
    if (Number(v) > 0) {
        transport.sampleRate = Number(v);
    }
}

function timesig(num, den) {
    transport.num = core.clampInt(num, 1, 99);
    transport.den = core.clampInt(den, 1, 64);
}

function beats(v) {
    transport.beats = Number(v);
    tick();
}

function tempo() {
    return transport.samplesPerBeat > 0 ? transport.sampleRate / transport.samplesPerBeat * 60 : 120;
}
tempo.local = 1;

function tick() {
    if (state.resize) {
        // after the last `writewave`: Max may write in its low-priority queue, where this message came after it
        state.resize = false;
        ui("recbuf", "sizeinsamps", state.captureSamples, CHANNELS); // ready for the next line, at the tempo now
    }
    if (jam) {
        run(jam.tick({ beats: transport.beats, bpm: tempo(), playing: transport.playing,
            sampleRate: transport.sampleRate }));
    }
}
tick.local = 1;

// --- arm and disarm -----------------------------------------------------------------------------------------

/** The Arm toggle: 1 starts a session (the jam begins at the next cycle line), 0 stops it. */
function arm(on) {
    if (Number(on) !== 0) {
        startJam();
    } else {
        stopJam();
    }
}

function startJam() {
    if (!state.ready || jam) {
        return;
    }
    if (!settings.folder) {
        say("No folder for the recordings: send the device `folder <path>`");
        return;
    }
    try {
        jam = new jamcore.Jam({ bars: settings.bars, lead: settings.lead, lag: settings.lag,
            onLate: settings.onLate, num: transport.num, den: transport.den });
    } catch (err) {
        say(String(err.message || err));
        return;
    }
    state.startId = nextId();
    state.session = "";
    state.askedAt = now();
    state.takeBeats = null;
    ui("advice", "set", "");
    ui("margin", "set", "");
    var message = ["/stembridge/jam/start", state.replyPort, state.startId, settings.stem,
        "bars", settings.bars, "bpm", tempo(), "timesig", transport.num + "/" + transport.den,
        "lag", settings.lag, "lead", settings.lead, "samplerate", transport.sampleRate];
    if (settings.prompt) {
        message.push("prompt", settings.prompt);
    }
    sendOsc(message);
    run(jam.arm());
}
startJam.local = 1;

function stopJam() {
    if (!jam) {
        return;
    }
    state.takeBeats = jam.startBeats();
    run(jam.stop());
    jam = null;
    if (state.session) {
        state.stopId = nextId();
        sendOsc(["/stembridge/jam/stop", state.replyPort, state.stopId, state.session]);
        say("stopping: the daemon writes the take...");
    }
}
stopJam.local = 1;

/** Once a second: a start the daemon never answered is given up, in plain words. */
function watch() {
    if (jam && !state.session && now() - state.askedAt > ANSWER_WITHIN_MS) {
        run(jam.stop());
        jam = null;
        ui("armed", "set", 0);
        say("No answer from stembridge at " + settings.host + ":" + settings.port +
            ": start it with `stembridge serve`, then arm again");
    }
}
watch.local = 1;

// --- what the scheduling logic asks for ---------------------------------------------------------------------

function cycleFile(index) {
    return settings.folder + "/jam-" + state.session + "-in-" + (index % CYCLE_FILES) + ".wav";
}
cycleFile.local = 1;

function run(actions) {
    var i;
    var a;
    for (i = 0; i < actions.length; i++) {
        a = actions[i];
        switch (a.type) {
        case "start":
            ui("cycle", a.cycleTicks, "ticks"); // [phasor~ @lock 1]: one ramp a cycle, on the song's grid
            ui("pair", 2 * a.cycleTicks, "ticks"); // one ramp every two cycles: which player plays
            break;
        case "capture":
            state.captureSamples = a.samples;
            ui("recend", a.ms); // [record~] stops by itself there: `lead` before the line
            break;
        case "record":
            if (a.open) {
                ui("recbuf", "sizeinsamps", state.captureSamples, CHANNELS); // what the first line records
            }
            ui("recgate", a.open ? 1 : 0);
            break;
        case "cycle":
            sendCycle(a);
            break;
        case "load":
            ui(PLAYERS[a.slot].buffer, "replace", a.path);
            ui(PLAYERS[a.slot].length, a.partMs);
            break;
        case "clear":
            ui(PLAYERS[a.slot].buffer, "clear");
            break;
        case "show":
            ui("margin", "set", a.text);
            break;
        case "status":
            say(a.text);
            break;
        }
    }
}
run.local = 1;

function sendCycle(a) {
    var file = cycleFile(a.index);
    ui("recbuf", "writewave", file);
    state.resize = true; // at the next tick, once the file is written
    sendOsc(["/stembridge/jam/cycle", state.replyPort, nextId(), state.session, a.index, file, "bpm", a.bpm]);
}
sendCycle.local = 1;

// --- replies from [udpreceive] ------------------------------------------------------------------------------

function anything() {
    reply(messagename, Array.prototype.slice.call(arguments));
}

function reply(address, args) {
    switch (address) {
    case "/stembridge/jam/started":
        if (String(args[0]) !== state.startId || state.session) {
            return;
        }
        if (!jam) {
            // disarmed (or given up) before the daemon answered: end that session at once
            sendOsc(["/stembridge/jam/stop", state.replyPort, nextId(), String(args[1])]);
            return;
        }
        state.session = String(args[1]);
        run(jam.started());
        ui("advice", "set", "about " + Number(args[2]).toFixed(2) + " s a cycle");
        return;
    case "/stembridge/jam/advice":
        if (String(args[0]) === state.session) {
            ui("advice", "set", args.slice(1).join(" "));
            post("stembridge jam: " + args.slice(1).join(" ") + "\n");
        }
        return;
    case "/stembridge/jam/part":
        if (jam && String(args[0]) === state.session) {
            run(jam.part(Number(args[1]), String(args[2])));
        }
        return;
    case "/stembridge/jam/late":
        if (jam && String(args[0]) === state.session) {
            run(jam.late(Number(args[1]), Number(args[2])));
        }
        return;
    case "/stembridge/jam/stopped":
        if (String(args[0]) === state.session) {
            placeTake(String(args[1]));
        }
        return;
    case "/stembridge/error":
        if (String(args[0]) === state.startId && jam && !state.session) {
            run(jam.stop());
            jam = null;
            ui("armed", "set", 0);
        }
        say(core.plainError(String(args[1]), args.slice(2).join(" ")));
        return;
    }
}
reply.local = 1;

/** The whole performance into a new audio track after this one, at the jam's first line. */
function placeTake(path) {
    var v = new LiveAPI("live_app");
    var canInsert = core.canInsert(Number(v.call("get_major_version")), Number(v.call("get_minor_version")),
        Number(v.call("get_bugfix_version")));
    if (!settings.take || state.takeBeats === null || !canInsert) {
        say("The take: " + path + (canInsert ? "" : " (Live 12.0.5 or later puts it in a track: drag it in)"));
        return;
    }
    var device = new LiveAPI("this_device");
    var place = core.clipPlace(core.atomText(device.unquotedpath).replace(/ devices \d+$/, ""));
    var index = place ? place.track + 1 : -1;
    new LiveAPI("live_set").call("create_audio_track", index);
    var created = index >= 0 ? index : new LiveAPI("live_set").getcount("tracks") - 1;
    new LiveAPI("live_set tracks " + created).call("create_audio_clip", path, state.takeBeats);
    say("The take is in a new track at bar " + (state.takeBeats / (transport.num * 4 / transport.den) + 1) +
        ": " + path);
}
placeTake.local = 1;
