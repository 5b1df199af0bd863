-- @description Stembridge: separate, generate and vary audio with the local stembridge daemon
-- @version 0.1.0
-- @author stembridge
-- @about
--   # Stembridge
--   Four actions that talk to a running `stembridge serve` daemon on this machine:
--   - **Stembridge: Separate selected items**: a folder track per item, one child track per stem, aligned
--     with the item (playing what it plays, at its playrate).
--   - **Stembridge: Generate stem for time selection**: a new stem that fits the time selection and the
--     selected tracks (or all tracks), on a new track; variations become takes.
--   - **Stembridge: Vary selected item**: variations of an item, added as takes to flip between.
--   - **Stembridge: Status**: whether the daemon answers, its engines and models, and the settings.
--
--   Requires the `stembridge` command (Python package) and a daemon started with `stembridge serve`.
-- @provides
--   [main] Stembridge_Generate stem for time selection.lua
--   [main] Stembridge_Vary selected item.lua
--   [main] Stembridge_Status.lua
--   stembridge/lib.lua
--   stembridge/json.lua
--   stembridge/request.lua
--   stembridge/ui.lua
--   stembridge/project.lua
-- @changelog
--   First release: separate, generate, vary, status.

-- Separate the selected items into stems, each into a folder of stem tracks below its track. Which part of the
-- source file is separated (project.lua's item_info says what the take plays):
--   - the whole file, when the item plays at least half of it: every stem item then gets the source item's
--     position, length, take start offset, playrate and pitch, so trimmed, moved and stretched items stay aligned
--     with their stems, and a stem item can be extended later to show more of the song;
--   - only the part the item plays (`--start` = start offset, `--length` = item length x playrate), when that is
--     less than half of the file (a short item cut from a long recording): the job is shorter, the stems are
--     exactly that long, and the stem items play them from their start (offset 0) at the item's playrate and
--     pitch. A part that cannot be sent as a section (a negative start offset) uses the whole file.
-- With MIDI on (the `midi` setting, ticked in Generate's or Vary's form), each stem also gets its MIDI file on a
-- track right under it, an item at the same position and length.

local dir = ({ reaper.get_action_context() })[2]:match("^(.*)[/\\]")
local sb = dofile(dir .. "/stembridge/lib.lua")
local project, ui = sb.project, sb.ui
local TITLE = "Stembridge: Separate selected items"
local SECTION_BELOW = 0.5  -- separate only the played part when it is less than this share of the file

--- Whether to separate only the part of the file the item plays (see the comment at the top).
local function section_only(info)
  return project.section_problem(info) == nil and info.section_length < SECTION_BELOW * info.file_length
end

local function add_stems(info, result, section)
  local outputs = project.sorted_outputs(result)
  if #outputs == 0 then return info.name .. ": the daemon returned no stems." end
  project.change("Stembridge: separate " .. info.name, function()
    local source_track = project.valid(info.track, "MediaTrack*") and info.track or nil
    local index = project.index_below(source_track)
    local folder = project.insert_track(index, info.name .. " - stems")
    reaper.SetMediaTrackInfo_Value(folder, "I_FOLDERDEPTH", 1)
    -- the stems play like the item: from the section's start, or from where the item starts in the whole file
    local like = project.with_startoffs(info, section and 0 or info.section_start)
    local last, row = nil, index
    for _, out in ipairs(outputs) do
      local stem = type(out.stem) == "string" and out.stem or project.basename(out.path)
      row = row + 1
      last = project.insert_track(row, stem)
      project.add_item(last, out.path, info.position, info.length, stem, like)
      if out.midi then  -- its MIDI on a track right under it; MIDI plays in beats, so the offset is in beats too
        row = row + 1
        last = project.insert_track(row, stem .. " MIDI")
        project.add_midi_item(last, out.midi, info.position, info.length, stem .. " MIDI", like.startoffs / like.playrate)
      end
    end
    -- the source track may close folders (depth < 0); the stems now sit below it, so they close them instead
    local closes = source_track and reaper.GetMediaTrackInfo_Value(source_track, "I_FOLDERDEPTH") or 0
    if closes < 0 then reaper.SetMediaTrackInfo_Value(source_track, "I_FOLDERDEPTH", 0) else closes = 0 end
    reaper.SetMediaTrackInfo_Value(last, "I_FOLDERDEPTH", -1 + closes)
  end)
end

local function main()
  local infos, skipped = project.selected_items()
  if #infos == 0 then
    local why = #skipped > 0 and ("\n\n" .. table.concat(skipped, "\n")) or ""
    return ui.message("Select one or more audio items to separate." .. why, TITLE)
  end
  local stems = sb.request.setting("stems")
  local steps = {}
  for _, info in ipairs(infos) do
    local section = section_only(info)
    local args = { info.file }
    if section then
      for _, a in ipairs({ "--start", project.number(info.section_start),
                           "--length", project.number(info.section_length) }) do
        args[#args + 1] = a
      end
    end
    if stems then args[#args + 1], args[#args + 2] = "--stems", stems end
    if sb.request.midi_wanted() then args[#args + 1] = "--midi" end
    for _, key in ipairs({ "engine", "out" }) do
      local value = sb.request.setting(key)
      if value then args[#args + 1], args[#args + 2] = "--" .. key, value end
    end
    steps[#steps + 1] = {
      op = "separate", args = args, label = "Separating " .. info.name,
      on_done = function(result) return add_stems(info, result, section) end,
    }
  end
  ui.run(TITLE, steps, function()
    if #skipped > 0 then ui.message(table.concat(skipped, "\n"), TITLE) end
  end)
end

main()
