-- @noindex
-- Stembridge: Vary selected item (part of the Stembridge package; see "Stembridge_Separate selected items.lua"
-- for the package header).
--
-- Makes N variations of each selected item and adds them as takes of that item, the first one active, so the
-- user flips between them (the original stays as the first take). The daemon varies only the part of the source
-- file the item plays (`--start` = the take's start offset, `--length` = item length x playrate, in file
-- seconds), at the tempo the file plays at (project tempo / playrate), and, when that part is a whole number of
-- bars at that tempo and the time signature at the item's start, with `--bars` so the variations are bar-exact.
-- Each new take plays its variation from its start (offset 0) with the original take's playrate and pitch, so
-- it fills the item, in place. The beat grid of a variation starts at the item's start: an item that does not
-- start on a beat varies less tightly. With MIDI ticked, the variations' MIDI files go on a new track right under
-- the item's track, one item at the item's place with a take per variation.

local dir = ({ reaper.get_action_context() })[2]:match("^(.*)[/\\]")
local sb = dofile(dir .. "/stembridge/lib.lua")
local project, ui, request = sb.project, sb.ui, sb.request
local TITLE = "Stembridge: Vary selected item"
local BAR_TOLERANCE = 0.005  -- seconds: how close to whole bars a section must be for --bars

--- The arguments that say what to vary: the file, the section the item plays and its tempo (and bars).
local function section_args(info)
  local bpm, num, denom = project.tempo_at(info.position)
  local args = {
    info.file, "--start", project.number(info.section_start), "--length", project.number(info.section_length),
    "--time-signature", ("%d/%d"):format(num, denom),
  }
  local file_bpm = bpm / info.playrate
  if file_bpm < 20 or file_bpm > 400 then return args end  -- out of the daemon's range: let it estimate
  local bar = (num * 4 / denom) * 60 / file_bpm  -- seconds of file per bar
  local bars = math.floor(info.section_length / bar + 0.5)
  args[#args + 1], args[#args + 2] = "--bpm", project.number(file_bpm)
  if bars >= 1 and bars <= 256 and math.abs(info.section_length - bars * bar) <= BAR_TOLERANCE then
    args[#args + 1], args[#args + 2] = "--bars", tostring(bars)
  end
  return args
end

local function add_takes(info, result)
  local outputs = project.sorted_outputs(result)
  if #outputs == 0 then return info.name .. ": the daemon returned no variations." end
  if not project.valid(info.item, "MediaItem*") then
    return ("%s was deleted while its variations were made; they are in\n%s"):format(
      info.name, outputs[1].path:match("^(.*)[/\\]") or outputs[1].path)
  end
  project.change("Stembridge: vary " .. info.name, function()
    local first
    for i, out in ipairs(outputs) do
      local name = ("%s v%d"):format(info.name, tonumber(out.variation) or i)
      local take = project.add_take(info.item, out.path, name, project.with_startoffs(info, 0))
      first = first or take
    end
    reaper.SetActiveTake(first)
    local track = project.valid(info.track, "MediaTrack*") and info.track or nil
    project.add_midi_track(track, outputs, info.name .. " MIDI", info.position, info.length)
  end)
end

local function main()
  local found, skipped = project.selected_items()
  local infos = {}
  for _, info in ipairs(found) do
    local why = project.section_problem(info)
    if why then
      skipped[#skipped + 1] = ("%s is skipped: %s"):format(info.name, why)
    else
      infos[#infos + 1] = info
    end
  end
  if #infos == 0 then
    local why = #skipped > 0 and ("\n\n" .. table.concat(skipped, "\n")) or ""
    return ui.message("Select an audio item to vary." .. why, TITLE)
  end
  local function vary(values)
    local variations, strength, midi = tonumber(values[1]), tonumber(values[2]), ui.yes(values[3])
    if not variations or variations ~= math.floor(variations) or variations < 1 or variations > 16 then
      return ui.message(("Variations must be a whole number from 1 to 16, got %q."):format(values[1]), TITLE)
    end
    if not strength or strength < 0 or strength > 1 then
      return ui.message(("Strength must be a number from 0 to 1, got %q."):format(values[2]), TITLE)
    end
    if midi == nil then
      return ui.message(("MIDI must be y or n, got %q."):format(values[3]), TITLE)
    end
    request.remember_midi(midi)
    reaper.SetExtState(request.SECTION, "last_vary_variations", tostring(math.floor(variations)), true)
    reaper.SetExtState(request.SECTION, "last_strength", values[2], true)

    local steps = {}
    for _, info in ipairs(infos) do
      local args = section_args(info)
      for _, a in ipairs({ "--variations", tostring(math.floor(variations)), "--strength",
                           project.number(strength), "--seed", tostring(math.random(1, 999999)) }) do
        args[#args + 1] = a
      end
      for _, key in ipairs({ "engine", "out" }) do
        local value = request.setting(key)
        if value then args[#args + 1], args[#args + 2] = "--" .. key, value end
      end
      if midi then args[#args + 1] = "--midi" end
      steps[#steps + 1] = {
        op = "vary", args = args, label = "Varying " .. info.name,
        on_done = function(result) return add_takes(info, result) end,
      }
    end
    ui.run(TITLE, steps, function()
      if #skipped > 0 then ui.message(table.concat(skipped, "\n"), TITLE) end
    end)
  end

  ui.form(TITLE, {
    { "Variations (1-16)", request.setting("last_vary_variations", "3"), int = true },
    { "Strength (0-1)", request.setting("last_strength", "0.5") },
    { "MIDI", request.midi_wanted(), check = true },
  }, function(values)
    if values then vary(values) end
  end)
end

main()
