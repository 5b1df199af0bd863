// stembridge_jam_core.js: the scheduling logic of the StembridgeJam device, pure ES5 (no Max or Live globals),
// required by stembridge_jam.js and tested under node with a simulated transport (tests/m4l/jam_harness.js).
//
// The jam's clock is Live's song position in quarter notes ("beats", as [plugsync~] reports it: 0 at bar 1).
// Cycles sit on the song's grid of `bars`-bar cycles: grid cycle g covers beats [g * C, (g + 1) * C), where C is
// the cycle in quarter notes (bars x numerator x 4 / denominator). The jam's cycle k is grid cycle start + k, so
// its index follows the song position and the daemon's take lines up with the song from the jam's first line.
//
// Each call returns a list of actions for the glue to carry out, in order:
//   {type: "start", grid, lineBeats, cycleTicks}   the jam starts at this grid line (the patch's phasors)
//   {type: "record", open}                        let the patch start [record~] at each cycle line, or not
//   {type: "capture", ms, samples}                what [record~] keeps of a cycle: up to `lead` before its end
//   {type: "cycle", index, bpm, samples}          write the recording of cycle `index` and send it
//   {type: "load", slot, path, playIndex, partMs} load a part into a player's buffer (it plays in cycle
//                                                 playIndex, at grid parity `slot`, stretched to partMs)
//   {type: "clear", slot}                         silence a player's buffer
//   {type: "show", playIndex, marginMs, late, text}   the margin line: how early (or late) a part was
//   {type: "status", text}                        the state line
// The deadline rules follow docs/PROTOCOL.md (/stembridge/jam/*): the part answering cycle k plays in cycle
// k + 1 + lag; one that arrives after its line (or within `guardMs` of it, too late to load) is not played,
// and the player keeps what it had: the previous part (on_late `repeat`) or silence (`rest`).

var TICKS_PER_QUARTER = 480; // Max's transport ticks
var EPSILON = 1e-9;
var JUMP_BEATS = 0.5; // the playhead moved this far between two ticks: the song was relocated

/** Python's round(): half to even, so sample counts match bridge.audio.timing.Grid to the sample. */
function roundHalfEven(x) {
    var floor = Math.floor(x);
    var diff = x - floor;
    if (Math.abs(diff - 0.5) < 1e-9) {
        return floor % 2 === 0 ? floor : floor + 1;
    }
    return Math.round(x);
}

function quartersPerBar(num, den) {
    return num * 4 / den;
}

/** Samples in a cycle of `bars` bars: Grid(bpm, ts, sr).samples_for_bars(bars). */
function cycleSamples(bars, num, den, bpm, sampleRate) {
    return roundHalfEven(bars * quartersPerBar(num, den) * 60 / bpm * sampleRate);
}

/** Samples of a cycle the humans send: the cycle up to `lead` quarter notes before its end. */
function captureSamples(bars, num, den, bpm, sampleRate, lead) {
    return cycleSamples(bars, num, den, bpm, sampleRate) - roundHalfEven(lead * 60 / bpm * sampleRate);
}

var DEFAULTS = { bars: 4, lead: 1.0, lag: 0, onLate: "repeat", guardMs: 30, num: 4, den: 4 };

/** The options, checked: throws an Error naming the bad value and the fix. */
function checkOptions(given) {
    var o = {};
    var key;
    for (key in DEFAULTS) {
        if (DEFAULTS.hasOwnProperty(key)) {
            o[key] = given && given[key] !== undefined ? given[key] : DEFAULTS[key];
        }
    }
    if (!(o.bars >= 1 && o.bars <= 16 && Math.floor(o.bars) === o.bars)) {
        throw new Error("bars must be a whole number from 1 to 16, got " + o.bars);
    }
    if (!(o.lag >= 0 && o.lag <= 2 && Math.floor(o.lag) === o.lag)) {
        throw new Error("lag must be 0, 1 or 2, got " + o.lag);
    }
    if (o.onLate !== "repeat" && o.onLate !== "rest") {
        throw new Error("on_late must be repeat or rest, got " + o.onLate);
    }
    if (!(o.num >= 1 && o.den >= 1)) {
        throw new Error("time signature must be like 4/4, got " + o.num + "/" + o.den);
    }
    var cycle = o.bars * quartersPerBar(o.num, o.den);
    if (!(o.lead > 0 && o.lead < cycle)) {
        throw new Error("lead must be more than 0 and less than the cycle (" + cycle + " quarter notes), got " + o.lead);
    }
    if (!(o.guardMs >= 0)) {
        throw new Error("guardMs must be 0 or more, got " + o.guardMs);
    }
    return o;
}

function msText(ms) {
    return String(Math.round(Math.abs(ms)));
}

/** A jam: armed, it waits for its session and the transport, then runs cycle by cycle. */
function Jam(options) {
    this.o = checkOptions(options);
    this.cycleBeats = this.o.bars * quartersPerBar(this.o.num, this.o.den);
    this.state = "idle"; // idle | armed (waiting for the session) | waiting (for the transport) | running | halted
    this.beats = 0;
    this.bpm = 120;
    this.sampleRate = 44100;
    this.startGrid = null; // the grid cycle of the jam's index 0
    this.segmentStart = 0; // the first index recorded since the transport last started
    this.lastSent = -1; // the last index sent
    this.lastLine = null; // the last index whose line was crossed while running
    this.sentBpm = {}; // index -> bpm it was sent at
    this.pending = {}; // playIndex -> {path, bpm} waiting for its player to be free
    this.slots = [null, null]; // what each player holds: {playIndex, path, partMs} or null (silence)
    this.results = {}; // playIndex -> {marginMs, late}
    this.captureMs = null;
    this.haltNote = "";
    this.history = []; // {playIndex, marginMs, late, plays} for each line: what played
}

Jam.prototype.msPerBeat = function () {
    return 60000 / this.bpm;
};

Jam.prototype.lineBeats = function (index) {
    return (this.startGrid + index) * this.cycleBeats;
};

Jam.prototype.slotOf = function (playIndex) {
    return (this.startGrid + playIndex) % 2;
};

Jam.prototype.partMs = function (playIndex) {
    var asked = playIndex - 1 - this.o.lag;
    var bpm = this.sentBpm[asked] !== undefined ? this.sentBpm[asked] : this.bpm;
    return cycleSamples(this.o.bars, this.o.num, this.o.den, bpm, this.sampleRate) / this.sampleRate * 1000;
};

/** Arm: the glue has asked the daemon for a session. */
Jam.prototype.arm = function () {
    this.state = "armed";
    return [{ type: "status", text: "starting a session..." }];
};

/** The daemon started the session: the jam starts at the next cycle line once the transport plays. */
Jam.prototype.started = function () {
    if (this.state !== "armed") {
        return [];
    }
    this.state = "waiting";
    return [{ type: "status", text: "armed: the jam starts at the next " + this.o.bars + "-bar line" }];
};

/** Disarm or stop: no more recording, no more sending; the players fall silent. */
Jam.prototype.stop = function () {
    var was = this.state;
    this.state = "idle";
    this.pending = {};
    this.slots = [null, null];
    if (was === "idle") {
        return [];
    }
    return [{ type: "record", open: false }, { type: "clear", slot: 0 }, { type: "clear", slot: 1 },
        { type: "status", text: "stopped" }];
};

/** The transport now: {beats, bpm, playing, sampleRate}. */
Jam.prototype.tick = function (t) {
    var out = [];
    var previous = this.beats;
    this.beats = t.beats;
    this.bpm = t.bpm > 0 ? t.bpm : this.bpm;
    this.sampleRate = t.sampleRate > 0 ? t.sampleRate : this.sampleRate;
    if (this.state === "waiting" || this.state === "halted") {
        if (t.playing) {
            this.begin(out);
        }
        return out;
    }
    if (this.state !== "running") {
        return out;
    }
    if (!t.playing) {
        this.halt(out);
        return out;
    }
    if (t.beats < previous - EPSILON || t.beats > previous + JUMP_BEATS) {
        this.halt(out); // the song was relocated: go on at the next line, as after a restart
        this.begin(out);
        return out;
    }
    this.updateCapture(out);
    this.crossLines(previous, out);
    this.maybeSend(out);
    return out;
};

Jam.prototype.updateCapture = function (out) {
    var samples = captureSamples(this.o.bars, this.o.num, this.o.den, this.bpm, this.sampleRate, this.o.lead);
    var ms = samples / this.sampleRate * 1000;
    if (this.captureMs === null || Math.abs(ms - this.captureMs) > 1e-6) {
        this.captureMs = ms;
        out.push({ type: "capture", ms: ms, samples: samples });
    }
};

/** The transport started (or restarted): the next grid line is the next index, if it is after the last sent. */
Jam.prototype.begin = function (out) {
    var grid = Math.floor(this.beats / this.cycleBeats + EPSILON) + 1;
    var first = this.startGrid === null;
    if (first) {
        this.startGrid = grid;
    }
    var index = grid - this.startGrid;
    if (!first && index <= this.lastSent) {
        var note = "the song is before the jam's cycle " + this.lastSent +
            ": play from later, or disarm and arm again for a new take";
        if (note !== this.haltNote) {
            this.haltNote = note;
            out.push({ type: "status", text: note });
        }
        this.state = "halted";
        return;
    }
    this.state = "running";
    this.haltNote = "";
    this.segmentStart = index;
    this.lastLine = null;
    this.pending = {};
    this.slots = [null, null];
    this.captureMs = null;
    out.push({ type: "start", grid: grid, lineBeats: grid * this.cycleBeats,
        cycleTicks: this.cycleBeats * TICKS_PER_QUARTER });
    this.updateCapture(out);
    out.push({ type: "record", open: true });
    out.push({ type: "clear", slot: 0 });
    out.push({ type: "clear", slot: 1 });
    out.push({ type: "status", text: (first ? "jam starts" : "jam goes on") + " at bar " +
        (grid * this.o.bars + 1) + " (cycle " + index + ")" });
};

Jam.prototype.halt = function (out) {
    this.state = "halted";
    this.pending = {};
    this.slots = [null, null];
    out.push({ type: "record", open: false });
    out.push({ type: "clear", slot: 0 });
    out.push({ type: "clear", slot: 1 });
    out.push({ type: "status", text: "transport stopped: the jam goes on at the next line when it plays" });
};

/** Every line crossed since the last tick: the part for that cycle starts, and the other player is refilled. */
Jam.prototype.crossLines = function (previous, out) {
    var first = Math.floor((previous - EPSILON) / this.cycleBeats) + 1 - this.startGrid;
    var last = Math.floor(this.beats / this.cycleBeats + EPSILON) - this.startGrid;
    var k;
    for (k = Math.max(first, this.segmentStart); k <= last; k++) {
        if (this.lastLine !== null && k <= this.lastLine) {
            continue;
        }
        this.lastLine = k;
        this.atLine(k, out);
    }
};

Jam.prototype.atLine = function (k, out) {
    var slot = this.slotOf(k);
    var holds = this.slots[slot];
    var result = this.results[k];
    var answered = k - 1 - this.o.lag >= this.segmentStart;
    var onTime = holds !== null && holds.playIndex === k;
    if (answered && !onTime) {
        var what = this.o.onLate === "repeat" && holds ? "cycle " + holds.playIndex + "'s part again" : "rest";
        var why = result && result.late ? "late by " + msText(result.marginMs) + " ms" : "no part (reply lost?)";
        out.push({ type: "show", playIndex: k, marginMs: result ? result.marginMs : null, late: true,
            text: "cycle " + k + ": " + why + ": " + what });
    }
    this.history.push({ playIndex: k, plays: holds ? holds.playIndex : null, late: answered && !onTime });
    // the other player held cycle k - 1 and is free now: the next part, or what plays if it does not come
    var next = k + 1;
    var other = this.slotOf(next);
    if (this.pending[next]) {
        this.load(next, this.pending[next].path, out);
        delete this.pending[next];
    } else if (this.o.onLate === "repeat" && holds) {
        this.slots[other] = { playIndex: holds.playIndex, path: holds.path, partMs: holds.partMs };
        out.push({ type: "load", slot: other, path: holds.path, playIndex: holds.playIndex, partMs: holds.partMs });
    } else {
        this.slots[other] = null;
        out.push({ type: "clear", slot: other });
    }
};

Jam.prototype.load = function (playIndex, path, out) {
    var slot = this.slotOf(playIndex);
    var partMs = this.partMs(playIndex);
    this.slots[slot] = { playIndex: playIndex, path: path, partMs: partMs };
    out.push({ type: "load", slot: slot, path: path, playIndex: playIndex, partMs: partMs });
};

/** Send the cycle being recorded once the playhead is `lead` before its end. */
Jam.prototype.maybeSend = function (out) {
    if (this.lastLine === null || this.lastLine <= this.lastSent) {
        return;
    }
    var k = this.lastLine;
    if (this.beats + EPSILON >= this.lineBeats(k + 1) - this.o.lead) {
        this.lastSent = k;
        this.sentBpm[k] = this.bpm;
        out.push({ type: "cycle", index: k, bpm: this.bpm, samples: captureSamples(this.o.bars, this.o.num,
            this.o.den, this.bpm, this.sampleRate, this.o.lead) });
    }
};

/** `/stembridge/jam/part <session> <play_index> <path> <seconds_spent>`, now (at this.beats). */
Jam.prototype.part = function (playIndex, path) {
    var out = [];
    if (this.state !== "running" || playIndex - 1 - this.o.lag < this.segmentStart) {
        return out; // it answers music from before the transport stopped: it would not fit
    }
    var marginMs = (this.lineBeats(playIndex) - this.beats) * this.msPerBeat();
    var late = marginMs < this.o.guardMs;
    this.results[playIndex] = { marginMs: marginMs, late: late };
    if (late) {
        out.push({ type: "show", playIndex: playIndex, marginMs: marginMs, late: true,
            text: "cycle " + playIndex + ": part " + (marginMs < 0 ? msText(marginMs) + " ms late" :
                "only " + msText(marginMs) + " ms early") + ": not played" });
        return out;
    }
    out.push({ type: "show", playIndex: playIndex, marginMs: marginMs, late: false,
        text: "cycle " + playIndex + ": part ready " + msText(marginMs) + " ms early" });
    if (this.lastLine !== null && this.lastLine >= playIndex - 1) {
        this.load(playIndex, path, out); // its player is free: it finished cycle playIndex - 2
    } else {
        this.pending[playIndex] = { path: path };
    }
    return out;
};

/** `/stembridge/jam/late <session> <play_index> <ms_late>`: the daemon gave up on that part. */
Jam.prototype.late = function (playIndex, msLate) {
    if (this.state !== "running") {
        return [];
    }
    this.results[playIndex] = { marginMs: -Math.abs(msLate), late: true };
    return [{ type: "show", playIndex: playIndex, marginMs: -Math.abs(msLate), late: true,
        text: "cycle " + playIndex + ": the engine was " + msText(msLate) + " ms late" }];
};

/** Where the jam's take starts in the song, in beats (null before it started). */
Jam.prototype.startBeats = function () {
    return this.startGrid === null ? null : this.startGrid * this.cycleBeats;
};

exports.Jam = Jam;
exports.checkOptions = checkOptions;
exports.cycleSamples = cycleSamples;
exports.captureSamples = captureSamples;
exports.roundHalfEven = roundHalfEven;
exports.TICKS_PER_QUARTER = TICKS_PER_QUARTER;
