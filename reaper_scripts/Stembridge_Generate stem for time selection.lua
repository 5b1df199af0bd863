-- @noindex
-- Stembridge: Generate stem for time selection (part of the Stembridge package; see
-- "Stembridge_Separate selected items.lua" for the package header).
--
-- Generates a stem that fits the time selection: bpm and time signature at the selection start, as many bars
-- as the selection spans (rounded to whole bars), and, as context, the audio items of the selected tracks (all
-- tracks when none is selected) that overlap the selection. Each context item is sent with `--context-start`,
-- where the selection start falls in its file (take start offset + selection start - item position), so it may
-- start anywhere before the selection start. Items that start after the selection start (the daemon would hear
-- them early, from bar 1) or play at a rate other than 1 (their file is not at the project tempo) are listed as
-- left out; glue or render them to include them. It asks for the stem, a prompt, the bars and the variations (a
-- ReaImGui window when ReaImGui is installed, else GetUserInputs); the selection and the context are read when
-- the action starts. The result goes on a new track below the last selected track, one item at the selection
-- start; variations are takes of that item, named with the seed that made them (each run picks a new seed).
-- With MIDI ticked, the MIDI files go on a track right under it, one item with a take per variation.

local dir = ({ reaper.get_action_context() })[2]:match("^(.*)[/\\]")
local sb = dofile(dir .. "/stembridge/lib.lua")
local project, ui, request = sb.project, sb.ui, sb.request
local TITLE = "Stembridge: Generate stem for time selection"
local ALIGN = 0.002  -- seconds: an item starting this close after the selection start counts as at it

--- The tracks to take context from: the selected ones, else all.
local function context_tracks()
  local tracks = {}
  local count = reaper.CountSelectedTracks(0)
  for i = 0, (count > 0 and count or reaper.CountTracks(0)) - 1 do
    tracks[#tracks + 1] = count > 0 and reaper.GetSelectedTrack(0, i) or reaper.GetTrack(0, i)
  end
  return tracks
end

--- Why an overlapping item cannot be context, or nil and where the selection start is in its file (seconds).
local function context_start(info, start)
  if math.abs(info.playrate - 1) > 1e-6 then
    return ("its playrate is %s, not 1, so its file is not at the project tempo"):format(
      project.number(info.playrate))
  end
  if info.position > start + ALIGN then
    return ("it starts at %.3f s, after the selection start (the context must play from bar 1)"):format(
      info.position)
  end
  local at = info.section_start + (start - info.position)
  if at < -ALIGN then return "its file starts after the selection start (a negative take start offset)" end
  at = math.max(0, at)
  if at >= info.file_length then
    return ("its file ends before the selection start (%.3f s into a %.3f s file)"):format(at, info.file_length)
  end
  return nil, at
end

--- Context files with where bar 1 is in each (the items playing at the selection start) and notes on the items
-- left out. An item is sent once per file and start.
local function context(tracks, start, finish)
  local files, starts, seen, left_out = {}, {}, {}, {}
  for _, track in ipairs(tracks) do
    for i = 0, reaper.CountTrackMediaItems(track) - 1 do
      local item = reaper.GetTrackMediaItem(track, i)
      local pos = reaper.GetMediaItemInfo_Value(item, "D_POSITION")
      local len = reaper.GetMediaItemInfo_Value(item, "D_LENGTH")
      local muted = reaper.GetMediaItemInfo_Value(item, "B_MUTE") == 1
      if pos < finish and pos + len > start and not muted then
        local info, why = project.item_info(item)
        local at
        if info then why, at = context_start(info, start) end
        if why then
          local _, track_name = reaper.GetSetMediaTrackInfo_String(track, "P_NAME", "", false)
          left_out[#left_out + 1] = ("%s on track %q: %s"):format(info and info.name or "an item", track_name, why)
        else
          local key = info.file .. "\0" .. project.number(at)
          if not seen[key] then
            seen[key] = true
            files[#files + 1], starts[#starts + 1] = info.file, at
          end
        end
      end
    end
  end
  return files, starts, left_out
end

local function last_selected_track()
  local count = reaper.CountSelectedTracks(0)
  return count > 0 and reaper.GetSelectedTrack(0, count - 1) or nil
end

local function main()
  local start, finish = reaper.GetSet_LoopTimeRange(false, false, 0, 0, false)
  if not start or finish - start < 0.01 then
    return ui.message("Make a time selection first: the new stem fills it, from its start.", TITLE)
  end
  local bpm, num, denom = project.tempo_at(start)
  local quarters_per_bar = num * 4 / denom
  local quarters = reaper.TimeMap2_timeToQN(0, finish) - reaper.TimeMap2_timeToQN(0, start)
  local bars = math.max(1, math.min(256, math.floor(quarters / quarters_per_bar + 0.5)))
  local tracks = context_tracks()
  local files, starts, left_out = context(tracks, start, finish)

  local function generate(values)
    local stem, prompt = values[1], values[2]
    local n_bars, variations = tonumber(values[3]), tonumber(values[4])
    local midi = ui.yes(values[5])
    local problems = {}
    if stem == "" or stem:find("[^%w_%-]") then
      problems[#problems + 1] = "the stem must be one word, like bass"
    end
    if not n_bars or n_bars ~= math.floor(n_bars) or n_bars < 1 or n_bars > 256 then
      problems[#problems + 1] = ("bars must be a whole number from 1 to 256, got %q"):format(values[3])
    end
    if not variations or variations ~= math.floor(variations) or variations < 1 or variations > 16 then
      problems[#problems + 1] = ("variations must be a whole number from 1 to 16, got %q"):format(values[4])
    end
    if midi == nil then
      problems[#problems + 1] = ("MIDI must be y or n, got %q"):format(values[5])
    end
    if #problems > 0 then
      return ui.message("Nothing was generated: " .. table.concat(problems, "; ") .. ".", TITLE)
    end
    request.remember_midi(midi)
    reaper.SetExtState(request.SECTION, "last_stem", stem, true)
    reaper.SetExtState(request.SECTION, "last_prompt", prompt, true)
    reaper.SetExtState(request.SECTION, "last_variations", tostring(math.floor(variations)), true)

    local seed = math.random(1, 999999)
    local args = {
      "--stem", stem, "--bpm", project.number(bpm), "--bars", tostring(math.floor(n_bars)),
      "--time-signature", ("%d/%d"):format(num, denom), "--variations", tostring(math.floor(variations)),
      "--seed", tostring(seed), "--position", project.number(start),
    }
    if prompt ~= "" then args[#args + 1], args[#args + 2] = "--prompt", prompt end
    if midi then args[#args + 1] = "--midi" end
    for _, key in ipairs({ "engine", "out" }) do
      local value = request.setting(key)
      if value then args[#args + 1], args[#args + 2] = "--" .. key, value end
    end
    if #files > 0 then  -- one --context-start per --context file, in the same order
      args[#args + 1] = "--context"
      for _, file in ipairs(files) do args[#args + 1] = file end
      args[#args + 1] = "--context-start"
      for _, at in ipairs(starts) do args[#args + 1] = project.number(at) end
    end
    local end_qn = reaper.TimeMap2_timeToQN(0, start) + n_bars * quarters_per_bar
    local length = reaper.TimeMap2_QNToTime(0, end_qn) - start
    local below = last_selected_track()

    local function add_result(result)
      local outputs = project.sorted_outputs(result)
      if #outputs == 0 then return "The daemon returned no files." end
      project.change("Stembridge: generate " .. stem, function()
        local track = project.insert_track(project.index_below(below), stem)
        local item
        for i, out in ipairs(outputs) do
          local name = ("%s v%d (seed %d)"):format(stem, tonumber(out.variation) or i, seed)
          if i == 1 then
            item = project.add_item(track, out.path, start, length, name)
          else
            project.add_take(item, out.path, name)
          end
        end
        reaper.SetActiveTake(reaper.GetTake(item, 0))
        if midi then  -- right under it; the builtin engine always writes its notes: used only when asked for
          project.add_midi_track(track, outputs, stem .. " MIDI", start, length)
        end
      end)
      if #left_out > 0 then
        return "Generated without these overlapping items as context:\n" .. table.concat(left_out, "\n")
      end
    end

    local label = ("Generating %s: %d bars at %s bpm%s"):format(stem, n_bars, project.number(bpm),
      #files > 0 and (", %d context file(s)"):format(#files) or "")
    ui.run(TITLE, { { op = "generate", args = args, label = label, on_done = add_result } })
  end

  ui.form(TITLE, {
    { "Stem (bass drums keys pad lead)", request.setting("last_stem", "bass") },
    { "Prompt (optional)", request.setting("last_prompt", "") },
    { "Bars", bars, int = true },
    { "Variations (1-16)", request.setting("last_variations", "1"), int = true },
    { "MIDI", request.midi_wanted(), check = true },
  }, function(values)
    if values then generate(values) end
  end)
end

main()
