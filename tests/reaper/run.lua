-- Runs one Stembridge ReaScript against the stub: lua5.4 run.lua SCENARIO.lua DUMP.json
--
-- SCENARIO.lua returns a table: script (the .lua to run), tracks ({name, selected, folderdepth, items = {{position,
-- length, selected, mute, takes = {{file, startoffs, playrate, pitch, name, midi, section = {offset, length,
-- reversed} (a section source of the file)}}}}}), time_selection ({start, end}), tempo, timesig ({num, denom}),
-- ext_state ({Stembridge = {key = value}}), inputs (answers to successive GetUserInputs, each a list of strings;
-- missing = the user cancels), message_answers (ShowMessageBox return values in order; default OK, or No for
-- Yes/No boxes), click_cancel_when (click Cancel once a drawn text contains this), close_window_when (close the
-- progress window then), delete_selected_items_when (delete the selected items then), imgui (ReaImGui is
-- installed; see stub_reaper.lua), guard (seconds, default 60).
-- DUMP.json gets what the script did: see stub.dump.

local here = arg[0]:match("^(.*)[/\\]") or "."
local stub = dofile(here .. "/stub_reaper.lua")
local scenario = dofile(arg[1])
local state = stub.install(scenario)
stub.call(state, function() dofile(scenario.script) end)
stub.run_deferred(state, scenario.guard or 60)
stub.dump(state, arg[2])
