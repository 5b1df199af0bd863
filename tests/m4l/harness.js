// Runs the Max for Live device's JavaScript (m4l/stembridge.js, which requires m4l/stembridge_core.js and
// m4l/stembridge_midi.js) under node, as Max's [js] object would, with a stub Live set behind LiveAPI and stubs for
// outlet(), post(), Task, messnamed() and File (reading only: files on this disk).
//
// It talks JSON lines on stdin/stdout, one answer per command, so pytest (tests/test_m4l_device.py) can drive
// it step by step and put a real daemon between its outlets and its inlet:
//   {"op": "load", "live": {...}, "now": ms}      load the script with this Live set (see LiveSet below); "script"
//                                                 names another script in m4l/ (default stembridge.js)
//   {"op": "send", "message": "generate", "args": []}   a message into the [js] inlet, as Max delivers it
//   {"op": "reply", "address": "/stembridge/done", "args": [...]}   a message out of [udpreceive]
//   {"op": "time", "now": ms}  {"op": "tick"}      move the clock; run the scheduled Tasks
//   {"op": "select", "clip": "live_set tracks 0 clip_slots 1 clip"}   change Live's selected clip
//   {"op": "add_track", "index": 0, "name": "New"}   the user adds a track while a job runs
//   {"op": "eval", "expr": "barsOf(16, 4, 4)"}    evaluate an expression in the script's global scope
//   {"op": "live"}                                the stub Live set as it is now
//   {"op": "tasks"}                               the Tasks the script made: [{interval, running}]
// Every answer: {"ok", "result", "outlets": [[n, atoms...]], "calls": [...], "sets": [...], "posts": [...],
// "messnamed": [...], "errors": [...]} with what happened since the previous answer.
"use strict";

const fs = require("fs");
const path = require("path");
const readline = require("readline");
const vm = require("vm");

const M4L = path.resolve(__dirname, "..", "..", "m4l");
const DEFAULT_SCRIPT = "stembridge.js";

let log = fresh();
let context = null;
let live = null;
let clock = 0;
let tasks = [];
let observers = [];

function fresh() {
    return { outlets: [], calls: [], sets: [], posts: [], messnamed: [], errors: [] };
}

function flatten(args) {
    const atoms = [];
    for (const a of args) {
        if (Array.isArray(a)) {
            atoms.push(...a);
        } else {
            atoms.push(a);
        }
    }
    return atoms;
}

// --- the stub Live set -----------------------------------------------------------------------------------
// live = {app: {major, minor, bugfix}, song: {tempo, signature_numerator, signature_denominator, loop_start,
//         loop_length}, scenes: n, tracks: [{name, is_foldable, has_audio_input, has_midi_input,
//         clip_slots: [clip|null], arrangement_clips: [clip]}], view: {detail_clip: "<canonical path>" | null},
//         device_track: n (the track the device is on: "this_device" is its first device; 0 if absent)}
// clip = {name, file_path, is_audio_clip, warping, looping, start_marker, end_marker, loop_start, loop_end,
//         start_time, end_time, length, warp_markers (the JSON text Live gives), sample_length, sample_rate}
// A MIDI clip the script makes: {name, is_audio_clip: 0, is_midi_clip: 1, length, start_time, end_time, notes}.
// (as in Live's LOM: loop_start / loop_end are beats for warped clips and seconds of the file for unwarped ones)

function newTrack(name, midi) {
    return {
        name: name, is_foldable: 0, has_audio_input: midi ? 0 : 1, has_midi_input: midi ? 1 : 0,
        clip_slots: new Array(live.scenes).fill(null), arrangement_clips: []
    };
}

function midiClip(length, start) {
    return { name: "", is_audio_clip: 0, is_midi_clip: 1, length: length, start_time: start, end_time: start + length, notes: [] };
}

const NOTE_KEYS = ["pitch", "start_time", "duration", "velocity", "mute"];

/** Clip.add_new_notes' argument as the LOM takes it: a dictionary {notes: [{pitch, start_time, duration, velocity,
 * mute}]}; anything else is refused, as Live would. */
function checkNotes(arg) {
    if (!arg || typeof arg !== "object" || Array.isArray(arg) || !Array.isArray(arg.notes)) {
        return "add_new_notes takes a dictionary {notes: [...]}, got " + JSON.stringify(arg);
    }
    for (const note of arg.notes) {
        for (const key of NOTE_KEYS) {
            if (typeof note[key] !== "number" || !isFinite(note[key])) {
                return "add_new_notes: a note without a number " + key + ": " + JSON.stringify(note);
            }
        }
        if (note.pitch < 0 || note.pitch > 127 || note.duration <= 0 || note.start_time < 0) {
            return "add_new_notes: a note out of range: " + JSON.stringify(note);
        }
    }
    return null;
}

/** The canonical path of the object with a LiveAPI id (tracks and clips), or null. */
function pathOfId(id) {
    for (let t = 0; t < live.tracks.length; t++) {
        const track = live.tracks[t];
        if (ids.get(track) === id) {
            return "live_set tracks " + t;
        }
        for (let m = 0; m < track.clip_slots.length; m++) {
            if (track.clip_slots[m] && ids.get(track.clip_slots[m]) === id) {
                return "live_set tracks " + t + " clip_slots " + m + " clip";
            }
        }
        for (let m = 0; m < track.arrangement_clips.length; m++) {
            if (ids.get(track.arrangement_clips[m]) === id) {
                return "live_set tracks " + t + " arrangement_clips " + m;
            }
        }
    }
    return null;
}

function resolve(pathText) {
    const words = String(pathText).replace(/"/g, "").trim().split(/\s+/);
    if (words[0] === "id") {
        const found = pathOfId(Number(words[1]));
        return found ? resolve(found) : null;
    }
    if (words[0] === "this_device" && words.length === 1) {
        const track = live.device_track || 0;
        return { kind: "device", obj: {}, path: "live_set tracks " + track + " devices 0" };
    }
    if (words[0] === "live_app") {
        return words.length === 1 ? { kind: "app", obj: live.app, path: "live_app" } : null;
    }
    if (words[0] !== "live_set") {
        return null;
    }
    if (words.length === 1) {
        return { kind: "song", obj: live.song, path: "live_set" };
    }
    if (words[1] === "view") {
        if (words.length === 2) {
            return { kind: "view", obj: live.view, path: "live_set view" };
        }
        if (words[2] === "detail_clip" && words.length === 3) {
            return live.view.detail_clip ? resolve(live.view.detail_clip) : null;
        }
        return null;
    }
    if (words[1] !== "tracks") {
        return null;
    }
    const t = Number(words[2]);
    const track = live.tracks[t];
    if (!track) {
        return null;
    }
    if (words.length === 3) {
        return { kind: "track", obj: track, path: "live_set tracks " + t, index: t };
    }
    const m = Number(words[4]);
    if (words[3] === "clip_slots") {
        if (m >= track.clip_slots.length || !(m >= 0)) {
            return null;
        }
        const slot = { has_clip: track.clip_slots[m] ? 1 : 0 };
        if (words.length === 5) {
            return { kind: "slot", obj: slot, path: "live_set tracks " + t + " clip_slots " + m, track: t, index: m };
        }
        if (words[5] === "clip" && track.clip_slots[m]) {
            return { kind: "clip", obj: track.clip_slots[m], path: "live_set tracks " + t + " clip_slots " + m + " clip" };
        }
        return null;
    }
    if (words[3] === "arrangement_clips" && track.arrangement_clips[m]) {
        return { kind: "clip", obj: track.arrangement_clips[m], path: "live_set tracks " + t + " arrangement_clips " + m };
    }
    return null;
}

let nextId = 1;
const ids = new Map();

function idOf(obj) {
    if (!ids.has(obj)) {
        ids.set(obj, nextId++);
    }
    return ids.get(obj);
}

function LiveAPI(callback, pathText) {
    if (typeof callback !== "function") {
        pathText = callback;
        callback = null;
    }
    this._callback = callback;
    this._request = pathText;
    this._property = "";
    observers.push(this);
}

Object.defineProperty(LiveAPI.prototype, "_target", { get() { return resolve(this._request); } });
Object.defineProperty(LiveAPI.prototype, "id", { get() { const r = this._target; return r ? String(idOf(r.obj)) : "0"; } });
Object.defineProperty(LiveAPI.prototype, "path", { get() { const r = this._target; return r ? "\"" + r.path + "\"" : ""; } });
Object.defineProperty(LiveAPI.prototype, "unquotedpath", { get() { const r = this._target; return r ? r.path : ""; } });
Object.defineProperty(LiveAPI.prototype, "property", {
    get() { return this._property; },
    set(name) { this._property = name; },
});

LiveAPI.prototype.get = function (prop) {
    const r = this._target;
    if (!r) {
        log.errors.push("get " + prop + " on missing object " + this._request);
        return [];
    }
    if (!(prop in r.obj)) {
        log.errors.push("no property " + prop + " on " + r.path);
        return [];
    }
    const value = r.obj[prop];
    return Array.isArray(value) ? value : [value];
};

LiveAPI.prototype.set = function (prop, value) {
    const r = this._target;
    if (!r) {
        log.errors.push("set " + prop + " on missing object " + this._request);
        return;
    }
    log.sets.push({ path: r.path, prop: prop, value: value });
    r.obj[prop] = value;
};

LiveAPI.prototype.getcount = function (child) {
    const r = this._target;
    if (!r) {
        log.errors.push("getcount " + child + " on missing object " + this._request);
        return 0;
    }
    if (r.kind === "song" && child === "scenes") {
        return live.scenes;
    }
    if (r.kind === "song" && child === "tracks") {
        return live.tracks.length;
    }
    if (r.kind === "track" && (child === "clip_slots" || child === "arrangement_clips")) {
        return r.obj[child].length;
    }
    log.errors.push("getcount " + child + " on " + r.path);
    return 0;
};

LiveAPI.prototype.call = function (fn, ...args) {
    const r = this._target;
    if (!r) {
        log.errors.push("call " + fn + " on missing object " + this._request);
        return undefined;
    }
    log.calls.push({ path: r.path, fn: fn, args: args });
    if (r.kind === "app" && /^get_(major|minor|bugfix)_version$/.test(fn)) {
        const version = fn.split("_")[1];
        return live.app[version];
    }
    const hasInsert = live.app.major > 12 || (live.app.major === 12 && (live.app.minor > 0 || live.app.bugfix >= 5));
    if (r.kind === "song" && (fn === "create_audio_track" || fn === "create_midi_track")) {
        const index = args[0] === -1 ? live.tracks.length : args[0];
        if (!(index >= 0 && index <= live.tracks.length)) {
            log.errors.push(fn + ": index " + index + " out of range");
            return undefined;
        }
        const midi = fn === "create_midi_track";
        live.tracks.splice(index, 0, newTrack(midi ? "MIDI" : "Audio", midi));
        return undefined;
    }
    if (r.kind === "slot" && fn === "create_clip") {
        const track = live.tracks[r.track];
        if (track.has_midi_input !== 1 || track.clip_slots[r.index] || !(args[0] > 0)) {
            log.errors.push("create_clip needs an empty slot on a MIDI track and a length > 0: " + r.path);
            return undefined;
        }
        track.clip_slots[r.index] = midiClip(args[0], 0);
        return undefined;
    }
    if (r.kind === "track" && fn === "create_midi_clip" && hasInsert) {
        if (r.obj.has_midi_input !== 1 || !(args[1] > 0)) {
            log.errors.push("create_midi_clip needs a MIDI track and a length > 0: " + r.path);
            return undefined;
        }
        r.obj.arrangement_clips.push(midiClip(args[1], args[0]));
        return undefined;
    }
    if (r.kind === "clip" && fn === "add_new_notes") {
        const problem = r.obj.is_midi_clip === 1 ? checkNotes(args[0]) : "add_new_notes on an audio clip";
        if (problem) {
            log.errors.push(problem);
            return undefined;
        }
        r.obj.notes.push(...args[0].notes);
        return undefined;
    }
    if (r.kind === "song" && fn === "create_scene") {
        live.scenes += 1;
        for (const t of live.tracks) {
            t.clip_slots.push(null);
        }
        return undefined;
    }
    if (r.kind === "track" && fn === "create_audio_clip" && hasInsert) {
        if (r.obj.has_audio_input !== 1) {
            log.errors.push("create_audio_clip on a track that is not an audio track");
            return undefined;
        }
        r.obj.arrangement_clips.push({ name: path.basename(String(args[0])), file_path: args[0], is_audio_clip: 1, start_time: args[1] });
        return undefined;
    }
    if (r.kind === "slot" && fn === "create_audio_clip" && hasInsert) {
        const track = live.tracks[r.track];
        if (track.clip_slots[r.index]) {
            log.errors.push("create_audio_clip on a slot that has a clip");
            return undefined;
        }
        track.clip_slots[r.index] = { name: path.basename(String(args[0])), file_path: args[0], is_audio_clip: 1 };
        return undefined;
    }
    log.errors.push("no function " + fn + " on " + r.path + " in Live " + live.app.major + "." + live.app.minor + "." + live.app.bugfix);
    return undefined;
};

// --- Max -------------------------------------------------------------------------------------------------

function Task(fn, owner) {
    this.fn = fn;
    this.owner = owner;
    this.interval = 0;
    this.running = false;
    tasks.push(this);
}
Task.prototype.repeat = function () { this.running = true; };
Task.prototype.cancel = function () { this.running = false; };
Task.prototype.schedule = function () { this.running = true; this.once = true; };

/** Max's File, for reading: isopen, position, eof, readbytes(count) (an array of byte values), close(). */
function File(filename, access) {
    this.filename = filename;
    this.access = access || "read";
    this.position = 0;
    this._open = false;
    try {
        this._data = fs.readFileSync(String(filename));
        this._open = true;
    } catch (err) {
        this._data = Buffer.alloc(0);
    }
    this.eof = this._data.length;
}
Object.defineProperty(File.prototype, "isopen", { get() { return this._open; } });
File.prototype.readbytes = function (count) {
    if (!this._open) {
        log.errors.push("File.readbytes on a file that is not open: " + this.filename);
        return [];
    }
    const out = Array.from(this._data.subarray(this.position, this.position + count));
    this.position += out.length;
    return out;
};
File.prototype.close = function () { this._open = false; };

function load(liveSet, now, script) {
    live = liveSet;
    clock = now || 0;
    tasks = [];
    observers = [];
    const sandbox = {
        outlet: function (n, ...args) { log.outlets.push([n].concat(flatten(args))); },
        post: function (...args) { log.posts.push(args.join(" ")); },
        messnamed: function (...args) { log.messnamed.push(flatten(args)); },
        LiveAPI: LiveAPI,
        Task: Task,
        File: File,
        require: maxRequire,
        messagename: "",
        Math: Math,
    };
    context = vm.createContext(sandbox);
    const file = path.join(M4L, script || DEFAULT_SCRIPT);
    vm.runInContext(fs.readFileSync(file, "utf8"), context, { filename: file });
    context.now = function () { return clock; };
}

/** Max's require(): the module's file beside the script, run in its own scope, which fills `exports`. */
function maxRequire(name) {
    const file = path.join(M4L, name.endsWith(".js") ? name : name + ".js");
    const scope = vm.createContext({ exports: {}, post: function () {} });
    vm.runInContext(fs.readFileSync(file, "utf8"), scope, { filename: file });
    return scope.exports;
}

/** A message into the [js] inlet: Max calls the function of that name, else anything() with messagename. */
function deliver(message, args) {
    if (message !== "anything" && typeof context[message] === "function") {
        if (context[message].local) {
            throw new Error("js: " + message + " is local to the script, not a message (Max would refuse it)");
        }
        return context[message].apply(context, args);
    }
    context.messagename = message;
    return context.anything.apply(context, args);
}

function run(cmd) {
    switch (cmd.op) {
    case "load":
        load(cmd.live, cmd.now, cmd.script);
        return null;
    case "send":
        return deliver(cmd.message, cmd.args || []);
    case "reply":
        return deliver(cmd.address, cmd.args || []);
    case "time":
        clock = cmd.now;
        return null;
    case "tick":
        for (const task of tasks.slice()) {
            if (task.running) {
                if (task.once) {
                    task.running = false;
                }
                task.fn.call(task.owner);
            }
        }
        return null;
    case "select":
        live.view.detail_clip = cmd.clip;
        for (const o of observers) {
            if (o._callback && o.property === "detail_clip") {
                o._callback(["detail_clip", "id", cmd.clip ? 1 : 0]);
            }
        }
        return null;
    case "add_track":
        live.tracks.splice(cmd.index, 0, newTrack(cmd.name, cmd.midi));
        return null;
    case "eval":
        return vm.runInContext(cmd.expr, context);
    case "live":
        return live;
    case "tasks":
        return tasks.map(function (t) { return { interval: t.interval, running: t.running }; });
    default:
        throw new Error("unknown op " + cmd.op);
    }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", function (line) {
    if (!line.trim()) {
        return;
    }
    let answer;
    try {
        const result = run(JSON.parse(line));
        answer = Object.assign({ ok: true, result: result === undefined ? null : result }, log);
    } catch (err) {
        answer = Object.assign({ ok: false, error: String(err && err.stack || err) }, log);
    }
    log = fresh();
    process.stdout.write(JSON.stringify(answer) + "\n");
});
