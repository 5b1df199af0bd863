// Drives the jam device's scheduling logic (m4l/stembridge_jam_core.js) with a simulated Live transport, under
// node, for tests/test_m4l_jam.py. JSON lines on stdin, one answer per command on stdout:
//   {"op": "new", "options": {...}, "bpm": 120, "sampleRate": 44100}   a new Jam, the transport stopped at beat 0
//   {"op": "arm"} {"op": "started"} {"op": "stop"}                        the Jam's own calls
//   {"op": "play"} {"op": "halt"}                                         start / stop the transport
//   {"op": "locate", "beats": 12}                                         move the playhead (the next tick sees it)
//   {"op": "tempo", "bpm": 90}                                            change the tempo from now on
//   {"op": "advance", "ms": 2000, "step": 10}   run the transport for `ms`, ticking the Jam every `step` ms
//   {"op": "part", "playIndex": 2, "path": "/x/part-2.wav"}               a reply from the daemon, now
//   {"op": "late", "playIndex": 2, "ms": 120}
//   {"op": "eval", "expr": "jam.history"}                                 look inside (jam, core, transport)
// Every answer: {"ok", "result", "actions": [{...action, "beats", "ms"}]}: what the Jam asked for since the last
// answer, each with the song position (beats) and the simulated time (ms) when it asked.
"use strict";

const path = require("path");
const readline = require("readline");

const core = require(path.resolve(__dirname, "..", "..", "m4l", "stembridge_jam_core.js"));

let jam = null;
let transport = null;
let actions = [];

function record(list) {
    for (const a of list) {
        actions.push(Object.assign({}, a, { beats: transport.beats, ms: transport.ms }));
    }
}

function tick() {
    record(jam.tick({ beats: transport.beats, bpm: transport.bpm, playing: transport.playing,
        sampleRate: transport.sampleRate }));
}

function run(cmd) {
    switch (cmd.op) {
    case "new":
        jam = new core.Jam(cmd.options || {});
        transport = { beats: 0, bpm: cmd.bpm || 120, playing: false, sampleRate: cmd.sampleRate || 44100, ms: 0 };
        return null;
    case "arm":
        record(jam.arm());
        return null;
    case "started":
        record(jam.started());
        return null;
    case "stop":
        record(jam.stop());
        return null;
    case "play":
        transport.playing = true;
        tick();
        return null;
    case "halt":
        transport.playing = false;
        tick();
        return null;
    case "locate":
        transport.beats = cmd.beats;
        return null;
    case "tempo":
        transport.bpm = cmd.bpm;
        return null;
    case "advance": {
        const step = cmd.step || 10;
        for (let t = 0; t < cmd.ms; t += step) {
            transport.ms += step;
            if (transport.playing) {
                transport.beats += step / 60000 * transport.bpm;
            }
            tick();
        }
        return null;
    }
    case "part":
        record(jam.part(cmd.playIndex, cmd.path));
        return null;
    case "late":
        record(jam.late(cmd.playIndex, cmd.ms));
        return null;
    case "eval":
        return eval(cmd.expr); // eslint-disable-line no-eval
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
        answer = { ok: true, result: result === undefined ? null : result, actions: actions };
    } catch (err) {
        answer = { ok: false, error: String(err && err.stack || err), actions: actions };
    }
    actions = [];
    process.stdout.write(JSON.stringify(answer) + "\n");
});
