-- @noindex
-- Reading and changing the Reaper project: selected items and their sources, tempo at a time, new tracks,
-- items and takes. Everything the request needs is read before it starts; the project is only changed when the
-- result is there, inside one undo block.

local project = {}

function project.basename(path)
  return (path:match("([^/\\]+)$") or path)
end

--- A take or file name without its audio extension ("My Song.wav" -> "My Song").
function project.display_name(name)
  local stem, ext = name:match("^(.+)%.(%w+)$")
  local audio = { wav = 1, wave = 1, aif = 1, aiff = 1, flac = 1, mp3 = 1, ogg = 1, opus = 1, m4a = 1, w64 = 1 }
  return (stem and audio[ext:lower()]) and stem or name
end

--- Whether a pointer still names something in the project (the user may delete it while a job runs).
function project.valid(ptr, kind)
  return ptr ~= nil and reaper.ValidatePtr2(0, ptr, kind)
end

--- What a request needs to know about an item's active take, or nil and why the item cannot be used.
-- The source file is the whole file the take plays from; the take shows the part from `startoffs` seconds into
-- its source, `playrate` times as fast, for `length` seconds of timeline from `position`. A take whose source is a
-- section of its file ("Loop section of audio item source") starts `source_offset` seconds into the file; a
-- reversed take is refused, since its file plays backwards. `section_start` and `section_length` are the part of
-- the file the item plays (file seconds: what `--start` and `--length` take); `file_length` is the file's length.
function project.item_info(item)
  local take = reaper.GetActiveTake(item)
  if not take then return nil, "it is empty" end
  if reaper.TakeIsMIDI(take) then return nil, "it is MIDI, not audio" end
  local source = reaper.GetMediaItemTake_Source(take)
  local file = source and reaper.GetMediaSourceFileName(source, "") or ""
  local parent = source and reaper.GetMediaSourceParent(source)
  local source_offset = 0
  if parent then  -- a section or reversed source: the file is its parent's
    file = reaper.GetMediaSourceFileName(parent, "") or ""
    if reaper.APIExists("PCM_Source_GetSectionInfo") then
      local is_section, offset, _, reversed = reaper.PCM_Source_GetSectionInfo(source)
      if is_section and reversed then
        return nil, "it plays its file reversed (glue it first: Item > Glue items)"
      end
      if is_section then source_offset = offset end
    end
  end
  if file == "" then return nil, "its take has no audio file" end
  local _, take_name = reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", "", false)
  local info = {
    item = item, take = take, track = reaper.GetMediaItem_Track(item), file = file,
    name = project.display_name((take_name and take_name ~= "") and take_name or project.basename(file)),
    position = reaper.GetMediaItemInfo_Value(item, "D_POSITION"),
    length = reaper.GetMediaItemInfo_Value(item, "D_LENGTH"),
    startoffs = reaper.GetMediaItemTakeInfo_Value(take, "D_STARTOFFS"),
    playrate = reaper.GetMediaItemTakeInfo_Value(take, "D_PLAYRATE"),
    pitch = reaper.GetMediaItemTakeInfo_Value(take, "D_PITCH"),
    preserve_pitch = reaper.GetMediaItemTakeInfo_Value(take, "B_PPITCH"),
    source_offset = source_offset,
    file_length = (reaper.GetMediaSourceLength(parent or source)),
  }
  info.section_start = source_offset + info.startoffs
  info.section_length = info.length * info.playrate
  return info
end

--- Why the part of its file an item plays cannot be sent as `--start`/`--length`, or nil when it can.
function project.section_problem(info)
  if info.section_start < 0 then
    return ("its take starts %.3f s before its file (a negative start offset); trim the item's start to the "
      .. "file, or glue it"):format(-info.section_start)
  end
  if info.section_start >= info.file_length then
    return ("it plays from %.3f s into its file, past the file's end (%.3f s)"):format(
      info.section_start, info.file_length)
  end
end

--- A copy of `info` (an item_info) with another take start offset, for takes that play a different file.
function project.with_startoffs(info, startoffs)
  local copy = {}
  for k, v in pairs(info) do copy[k] = v end
  copy.startoffs = startoffs
  return copy
end

--- The selected items that can be used, and a line for each that cannot.
function project.selected_items()
  local infos, skipped = {}, {}
  for i = 0, reaper.CountSelectedMediaItems(0) - 1 do
    local item = reaper.GetSelectedMediaItem(0, i)
    local info, why = project.item_info(item)
    if info then
      infos[#infos + 1] = info
    else
      skipped[#skipped + 1] = ("item %d is skipped: %s"):format(i + 1, why)
    end
  end
  return infos, skipped
end

--- Tempo (quarter notes per minute) and time signature at a time on the timeline.
function project.tempo_at(time)
  local num, denom, bpm = reaper.TimeMap_GetTimeSigAtTime(0, time)
  if not bpm or bpm <= 0 then bpm = reaper.Master_GetTempo() end
  if not num or num < 1 or not denom or denom < 1 then num, denom = 4, 4 end
  return bpm, math.floor(num + 0.5), math.floor(denom + 0.5)
end

--- A number as a command-line argument: no exponent, no trailing zeros.
function project.number(x)
  local text = ("%.6f"):format(x):gsub("0+$", ""):gsub("%.$", "")
  return text == "-0" and "0" or text
end

--- A new track at `index` (0-based) named `name`.
function project.insert_track(index, name)
  reaper.InsertTrackAtIndex(index, true)
  local track = reaper.GetTrack(0, index)
  reaper.GetSetMediaTrackInfo_String(track, "P_NAME", name, true)
  return track
end

--- The index a new track gets to sit right below `track` (or at the end when it is gone).
function project.index_below(track)
  if project.valid(track, "MediaTrack*") then
    return math.floor(reaper.GetMediaTrackInfo_Value(track, "IP_TRACKNUMBER"))  -- 1-based: the next 0-based slot
  end
  return reaper.CountTracks(0)
end

--- Adds a take playing `path` to `item`, with the offset, rate and pitch of `like` (an item_info) when given.
function project.add_take(item, path, name, like)
  local take = reaper.AddTakeToMediaItem(item)
  reaper.SetMediaItemTake_Source(take, reaper.PCM_Source_CreateFromFile(path))
  if like then
    reaper.SetMediaItemTakeInfo_Value(take, "D_STARTOFFS", like.startoffs)
    reaper.SetMediaItemTakeInfo_Value(take, "D_PLAYRATE", like.playrate)
    reaper.SetMediaItemTakeInfo_Value(take, "D_PITCH", like.pitch)
    reaper.SetMediaItemTakeInfo_Value(take, "B_PPITCH", like.preserve_pitch)
  end
  reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", name, true)
  return take
end

--- A new item on `track` from `position` for `length` seconds, playing `path`.
function project.add_item(track, path, position, length, name, like)
  local item = reaper.AddMediaItemToTrack(track)
  reaper.SetMediaItemInfo_Value(item, "D_POSITION", position)
  reaper.SetMediaItemInfo_Value(item, "D_LENGTH", length)
  local take = project.add_take(item, path, name, like)
  return item, take
end

--- A new item on `track` from `position` for `length` seconds, playing the MIDI file `path` from `startoffs`
-- seconds in. The source refers to the file (PCM_Source_CreateFromFileEx with forcenoMidiImp: no import
-- dialog, whatever the preferences say); Reaper plays a MIDI source in beats, at the project tempo, not at the
-- tempo the file carries.
function project.add_midi_item(track, path, position, length, name, startoffs)
  local item = reaper.AddMediaItemToTrack(track)
  reaper.SetMediaItemInfo_Value(item, "D_POSITION", position)
  reaper.SetMediaItemInfo_Value(item, "D_LENGTH", length)
  local take = project.add_midi_take(item, path, name, startoffs)
  return item, take
end

--- Adds a take playing the MIDI file `path` to `item` (see add_midi_item).
function project.add_midi_take(item, path, name, startoffs)
  local take = reaper.AddTakeToMediaItem(item)
  reaper.SetMediaItemTake_Source(take, reaper.PCM_Source_CreateFromFileEx(path, true))
  if startoffs and startoffs ~= 0 then reaper.SetMediaItemTakeInfo_Value(take, "D_STARTOFFS", startoffs) end
  reaper.GetSetMediaItemTakeInfo_String(take, "P_NAME", name, true)
  return take
end

--- The MIDI files of `outputs` (those that have one) as takes of one new item on a new track right below
-- `track`, named `name`, at `position` for `length` seconds; the first take active. Returns the track, or nil when
-- no output has a MIDI file.
function project.add_midi_track(track, outputs, name, position, length)
  local item, first
  local midi_track
  for i, out in ipairs(outputs) do
    if out.midi then
      midi_track = midi_track or project.insert_track(project.index_below(track), name)
      local take_name = #outputs > 1 and ("%s v%d"):format(name, tonumber(out.variation) or i) or name
      if item then
        project.add_midi_take(item, out.midi, take_name)
      else
        item, first = project.add_midi_item(midi_track, out.midi, position, length, take_name)
      end
    end
  end
  if first then reaper.SetActiveTake(first) end
  return midi_track
end

--- Runs `change` inside one undo point named `name`, with the arrange view redrawn once at the end.
function project.change(name, change)
  reaper.Undo_BeginBlock()
  reaper.PreventUIRefresh(1)
  local ok, err = pcall(change)
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  reaper.Undo_EndBlock(name, -1)
  if not ok then error(err, 0) end
  reaper.Main_OnCommand(40047, 0)  -- Peaks: Build any missing peaks
end

--- Whether a path is a MIDI file: a .mid (or .midi) extension, in any case.
function project.is_midi(path)
  local ext = tostring(path):match("%.(%w+)$")
  ext = ext and ext:lower()
  return ext == "mid" or ext == "midi"
end

local function without_extension(path)
  return (project.basename(path):gsub("%.%w+$", ""))
end

--- Gives each audio output its MIDI file (`out.midi`), when the job made them: the one `stembridge request`
-- already paired with it, else the .mid of the same name (x.wav -> x.mid, or x-2.mid when that name was taken),
-- else the next one in the daemon's order (it lists the .mid files in the order of their audio).
local function pair_midi(outputs, paths)
  local midi, claimed = {}, {}
  for _, path in ipairs(paths) do
    if type(path) == "string" and project.is_midi(path) then midi[#midi + 1] = path end
  end
  for _, out in ipairs(outputs) do
    if type(out.midi) == "string" then claimed[out.midi] = true end
  end
  local function claim(out, path)
    out.midi, claimed[path] = path, true
  end
  for _, out in ipairs(outputs) do
    local base = without_extension(out.path)
    for _, path in ipairs(midi) do
      local name = without_extension(path)
      if type(out.midi) ~= "string" and not claimed[path]
          and (name == base or (name:sub(1, #base) == base and name:sub(#base + 1):match("^%-%d+$"))) then
        claim(out, path)
      end
    end
  end
  for _, out in ipairs(outputs) do
    for _, path in ipairs(midi) do
      if type(out.midi) ~= "string" and not claimed[path] then claim(out, path) end
    end
  end
end

--- The audio outputs of a result sorted by variation, otherwise in the daemon's order, so takes come in order;
-- each with `midi`, the path of its MIDI file, when the job made one (see pair_midi).
function project.sorted_outputs(result)
  local outputs, order, paths = {}, {}, {}
  for _, out in ipairs(result.outputs or {}) do
    if type(out) == "table" and type(out.path) == "string" then
      paths[#paths + 1] = out.path
      if not project.is_midi(out.path) then
        outputs[#outputs + 1] = out
        order[out] = #outputs
      end
    end
  end
  pair_midi(outputs, type(result.paths) == "table" and result.paths or paths)
  table.sort(outputs, function(a, b)
    local va, vb = tonumber(a.variation) or 0, tonumber(b.variation) or 0
    if va ~= vb then return va < vb end
    return order[a] < order[b]
  end)
  return outputs
end

return project
