// stembridge_midi.js: a Standard MIDI File reader for the Stembridge Max for Live device (ES5, for Max's classic [js]).
//
// The daemon writes a `.mid` beside each audio file when a request carries `midi 1` (docs/PROTOCOL.md); the device
// reads it with this module and puts its notes into a MIDI clip. Formats 0 and 1, ticks per quarter note (SMPTE
// time division is refused), running status, note-on with velocity 0 as a note-off, tempo and time signature
// meta events. Nothing here touches Max or Live: it takes the file's bytes (an array of numbers 0..255) and
// returns plain objects, so the tests run it under node on files written by mido (tests/test_m4l_device.py).

/** A byte cursor over an array of bytes; every read past the end throws with the offset. */
function Reader(bytes, start, end) {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
}

Reader.prototype.byte = function () {
    if (this.pos >= this.end) {
        throw new Error("the file ends inside an event at byte " + this.pos);
    }
    return this.bytes[this.pos++];
};

Reader.prototype.uint = function (count) {
    var value = 0;
    for (var i = 0; i < count; i++) {
        value = value * 256 + this.byte();
    }
    return value;
};

/** A variable-length quantity: 7 bits a byte, high bit set on all but the last (at most 4 bytes). */
Reader.prototype.vlq = function () {
    var value = 0;
    for (var i = 0; i < 4; i++) {
        var b = this.byte();
        value = value * 128 + (b & 0x7f);
        if (!(b & 0x80)) {
            return value;
        }
    }
    throw new Error("a variable-length number longer than 4 bytes at byte " + this.pos);
};

Reader.prototype.text = function (count) {
    var s = "";
    for (var i = 0; i < count; i++) {
        s += String.fromCharCode(this.byte());
    }
    return s;
};

/** Data bytes that follow a status byte in channel messages (0x80..0xEF), by the high nibble. */
var DATA_BYTES = { 8: 2, 9: 2, 10: 2, 11: 2, 12: 1, 13: 1, 14: 2 };

/** The events of one MTrk chunk as {tick, type, ...}: "on"/"off" (channel, pitch, velocity), "tempo"
 * (usPerQuarter), "timesig" (numerator, denominator), "end". */
function readTrack(bytes, start, end) {
    var r = new Reader(bytes, start, end);
    var events = [];
    var tick = 0;
    var status = 0; // running status: the last channel-message status byte
    while (r.pos < end) {
        tick += r.vlq();
        var first = r.byte();
        if (first === 0xff) {
            var kind = r.byte();
            var length = r.vlq();
            var at = r.pos;
            if (kind === 0x51 && length === 3) {
                events.push({ tick: tick, type: "tempo", usPerQuarter: r.uint(3) });
            } else if (kind === 0x58 && length >= 2) {
                var numerator = r.byte();
                events.push({ tick: tick, type: "timesig", numerator: numerator, denominator: Math.pow(2, r.byte()) });
            } else if (kind === 0x2f) {
                events.push({ tick: tick, type: "end" });
            }
            r.pos = at + length;
            if (r.pos > end) {
                throw new Error("a meta event runs past the end of its track");
            }
            status = 0; // meta and sysex events cancel running status
            continue;
        }
        if (first === 0xf0 || first === 0xf7) {
            r.pos += r.vlq(); // sysex: skipped
            status = 0;
            continue;
        }
        var data1;
        if (first & 0x80) {
            status = first;
            data1 = r.byte();
        } else {
            if (!status) {
                throw new Error("a data byte without a status byte (running status) at byte " + (r.pos - 1));
            }
            data1 = first;
        }
        var high = status >> 4;
        if (DATA_BYTES[high] === undefined) {
            throw new Error("an unknown status byte " + status + " at byte " + (r.pos - 1));
        }
        var data2 = DATA_BYTES[high] === 2 ? r.byte() : 0;
        if (high === 9 && data2 > 0) {
            events.push({ tick: tick, type: "on", channel: status & 15, pitch: data1, velocity: data2 });
        } else if (high === 8 || high === 9) {
            events.push({ tick: tick, type: "off", channel: status & 15, pitch: data1 });
        }
    }
    return { events: events, length: tick };
}

/** Seconds at `tick` from a sorted tempo map [{tick, usPerQuarter}] (120 bpm before the first change). */
function tickSeconds(tempos, ppq, tick) {
    var seconds = 0;
    var lastTick = 0;
    var us = 500000;
    for (var i = 0; i < tempos.length && tempos[i].tick <= tick; i++) {
        seconds += (tempos[i].tick - lastTick) * us / ppq / 1e6;
        lastTick = tempos[i].tick;
        us = tempos[i].usPerQuarter;
    }
    return seconds + (tick - lastTick) * us / ppq / 1e6;
}

/** A Standard MIDI File's notes and timing, from its bytes.
 *
 * Returns {format, ppq, tempos: [{tick, usPerQuarter, bpm}], timeSignatures: [{tick, numerator, denominator}],
 * lengthTicks, lengthBeats, lengthSeconds, notes: [{pitch, channel, velocity, startTick, endTick, start, duration
 * (beats: quarter notes from tick 0), startSeconds, durationSeconds}]}, notes sorted by start then pitch. A
 * note-on with no note-off ends at its track's end. Throws an Error naming what is wrong with a file that is
 * not a Standard MIDI File this can read. */
function parseSmf(bytes) {
    if (bytes.length < 14 || String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]) !== "MThd") {
        throw new Error("not a Standard MIDI File (no MThd header)");
    }
    var head = new Reader(bytes, 4, bytes.length);
    var headerLength = head.uint(4);
    var format = head.uint(2);
    var trackCount = head.uint(2);
    var division = head.uint(2);
    if (format > 1) {
        throw new Error("MIDI file format " + format + " is not supported (only 0 and 1)");
    }
    if (division & 0x8000 || division === 0) {
        throw new Error("SMPTE time division is not supported (only ticks per quarter note)");
    }
    var pos = 8 + headerLength;
    var events = [];
    var lengthTicks = 0;
    var t;
    for (t = 0; t < trackCount && pos + 8 <= bytes.length; t++) {
        var chunk = new Reader(bytes, pos, bytes.length);
        var id = chunk.text(4);
        var size = chunk.uint(4);
        var start = pos + 8;
        pos = start + size;
        if (pos > bytes.length) {
            throw new Error("track " + (t + 1) + " says " + size + " bytes but the file ends first");
        }
        if (id !== "MTrk") {
            t--; // an unknown chunk: skipped, as the standard says
            continue;
        }
        var track = readTrack(bytes, start, pos);
        lengthTicks = Math.max(lengthTicks, track.length);
        for (var e = 0; e < track.events.length; e++) {
            track.events[e].track = t;
            track.events[e].order = events.length;
            events.push(track.events[e]);
        }
    }
    if (t < trackCount) {
        throw new Error("the file has " + t + " of the " + trackCount + " tracks its header announces");
    }
    events.sort(function (a, b) {
        return a.tick - b.tick || a.order - b.order;
    });
    var tempos = [];
    var timeSignatures = [];
    for (var i = 0; i < events.length; i++) {
        if (events[i].type === "tempo") {
            tempos.push({ tick: events[i].tick, usPerQuarter: events[i].usPerQuarter, bpm: 60e6 / events[i].usPerQuarter });
        } else if (events[i].type === "timesig") {
            timeSignatures.push({ tick: events[i].tick, numerator: events[i].numerator, denominator: events[i].denominator });
        }
    }
    var notes = pairNotes(events, lengthTicks);
    for (i = 0; i < notes.length; i++) {
        var n = notes[i];
        n.start = n.startTick / division;
        n.duration = (n.endTick - n.startTick) / division;
        n.startSeconds = tickSeconds(tempos, division, n.startTick);
        n.durationSeconds = tickSeconds(tempos, division, n.endTick) - n.startSeconds;
    }
    return {
        format: format, ppq: division, tempos: tempos, timeSignatures: timeSignatures, notes: notes,
        lengthTicks: lengthTicks, lengthBeats: lengthTicks / division, lengthSeconds: tickSeconds(tempos, division, lengthTicks)
    };
}

/** Note-ons matched with their note-offs (first in, first out per track, channel and pitch). */
function pairNotes(events, lengthTicks) {
    var open = {};
    var notes = [];
    var key;
    for (var i = 0; i < events.length; i++) {
        var e = events[i];
        if (e.type !== "on" && e.type !== "off") {
            continue;
        }
        key = e.track + ":" + e.channel + ":" + e.pitch;
        if (e.type === "on") {
            var note = { pitch: e.pitch, channel: e.channel, velocity: e.velocity, startTick: e.tick, endTick: lengthTicks };
            (open[key] = open[key] || []).push(note);
            notes.push(note);
        } else if (open[key] && open[key].length) {
            open[key].shift().endTick = e.tick;
        }
    }
    notes.sort(function (a, b) {
        return a.startTick - b.startTick || a.pitch - b.pitch;
    });
    return notes;
}

/** The notes of a parsed file as Live's Clip.add_new_notes wants them: {notes: [{pitch, start_time, duration,
 * velocity, mute}]}, times in beats of a set at `tempo` (quarter notes per minute). Each note sits where it
 * sounds: its time in seconds (by the file's tempo map) times tempo / 60, so a file written at another tempo
 * than the set's still lines up with the audio it came with; at the set's tempo this is its tick / PPQ. Notes
 * that start at or after `lengthBeats` are left out; the rest end by it at the latest. */
function liveNotes(smf, tempo, lengthBeats) {
    var out = [];
    var perSecond = tempo / 60.0;
    for (var i = 0; i < smf.notes.length; i++) {
        var n = smf.notes[i];
        var start = round6(n.startSeconds * perSecond);
        if (start >= lengthBeats - 1e-9) {
            continue;
        }
        var end = Math.min(lengthBeats, round6((n.startSeconds + n.durationSeconds) * perSecond));
        out.push({ pitch: n.pitch, start_time: start, duration: Math.max(round6(end - start), 1e-3), velocity: n.velocity, mute: 0 });
    }
    return { notes: out };
}

/** Rounded to a millionth of a beat: exact ticks stay exact after going through seconds. */
function round6(x) {
    return Math.round(x * 1e6) / 1e6;
}

exports.parseSmf = parseSmf;
exports.liveNotes = liveNotes;
exports.tickSeconds = tickSeconds;
