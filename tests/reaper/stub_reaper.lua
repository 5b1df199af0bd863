-- A stand-in for Reaper's `reaper` and `gfx` tables, enough to run the Stembridge ReaScripts under plain Lua.
--
-- It keeps a tiny project (tracks, items, takes, sources), records what the scripts ask of Reaper (message
-- boxes, input dialogs, processes, undo points, peaks) and runs ExecProcess and defer for real: a process
-- started with a negative timeout runs in the background through /bin/sh, and deferred functions run again and
-- again, 50 ms apart, until none is left (or a wall-clock guard ends it). Calling a reaper function the stub
-- does not know is an error, so a typo in an API name fails the test.
--
-- The scenario (a Lua table written by the test) gives the project and the user's answers; see run.lua.

local stub = {}

local function now()
  local fh = io.open("/proc/uptime", "r")
  if fh then
    local t = fh:read("n")
    fh:close()
    if t then return t end
  end
  return os.time() + 0.0
end
stub.now = now

local function sleep(seconds)
  os.execute(("sleep %.3f"):format(seconds))
end

--- The length in seconds of a WAV file (PCM or float, RIFF chunks), as GetMediaSourceLength reports it.
function stub.wav_seconds(path)
  local fh = assert(io.open(path, "rb"), "stub: GetMediaSourceLength: cannot open " .. tostring(path))
  local head = fh:read(12)
  assert(head and head:sub(1, 4) == "RIFF" and head:sub(9, 12) == "WAVE", "stub: not a WAV file: " .. path)
  local rate, align
  while true do
    local chunk = fh:read(8)
    assert(chunk and #chunk == 8, "stub: no data chunk in " .. path)
    local id, size = chunk:sub(1, 4), string.unpack("<I4", chunk, 5)
    if id == "fmt " then
      local fmt = fh:read(size)
      rate, align = string.unpack("<I4", fmt, 5), string.unpack("<I2", fmt, 13)
      if size % 2 == 1 then fh:read(1) end
    elseif id == "data" then
      fh:close()
      assert(rate and align, "stub: data before fmt in " .. path)
      return (size // align) / rate
    else
      fh:seek("cur", size + size % 2)
    end
  end
end

function stub.install(scenario)
  local state = {
    scenario = scenario, tracks = {}, messages = {}, inputs = {}, exec = {}, undo = {}, commands = {},
    console = {}, errors = {}, deferred = {}, atexit = {}, ext = {}, undo_depth = 0, refresh = 0,
    gfx = { inits = 0, quits = 0, drawn = {}, clicked = false, open = false, cancel_at = nil },
    max_call = 0, calls = 0, loop = { scenario.time_selection and scenario.time_selection[1] or 0,
      scenario.time_selection and scenario.time_selection[2] or 0 },
  }
  local tempo = scenario.tempo or 120
  local num, denom = (scenario.timesig or { 4, 4 })[1], (scenario.timesig or { 4, 4 })[2]
  for section, values in pairs(scenario.ext_state or {}) do
    for key, value in pairs(values) do state.ext[section .. "/" .. key] = tostring(value) end
  end

  local r = {}

  local function track_index(track)
    for i, t in ipairs(state.tracks) do if t == track then return i end end
    error("stub: that track is not in the project", 3)
  end

  local function new_track(name)
    return { kind = "MediaTrack*", name = name or "", folderdepth = 0, items = {}, selected = false }
  end

  local function new_item(track)
    local item = { kind = "MediaItem*", track = track, position = 0, length = 0, mute = 0, takes = {},
      selected = false }
    table.insert(track.items, item)
    return item
  end

  local function new_take(item)
    local take = { kind = "MediaItem_Take*", item = item, startoffs = 0, playrate = 1, pitch = 0, ppitch = 0,
      name = "" }
    table.insert(item.takes, take)
    if not item.active then item.active = take end
    return take
  end

  local function all_items(selected_only)
    local items = {}
    for _, t in ipairs(state.tracks) do
      for _, item in ipairs(t.items) do
        if item.selected or not selected_only then items[#items + 1] = item end
      end
    end
    return items
  end

  for _, spec in ipairs(scenario.tracks or {}) do
    local track = new_track(spec.name)
    track.selected, track.folderdepth = spec.selected or false, spec.folderdepth or 0
    table.insert(state.tracks, track)
    for _, ispec in ipairs(spec.items or {}) do
      local item = new_item(track)
      item.position, item.length, item.selected = ispec.position, ispec.length, ispec.selected or false
      item.mute = ispec.mute and 1 or 0
      for _, tspec in ipairs(ispec.takes or {}) do
        local take = new_take(item)
        take.name, take.startoffs, take.playrate = tspec.name or "", tspec.startoffs or 0, tspec.playrate or 1
        take.midi = tspec.midi or false
        take.pitch = tspec.pitch or 0
        if tspec.file then take.source = { kind = "PCM_source*", file = tspec.file } end
        if tspec.section then  -- {offset, length, reversed}: a section source, whose parent is the file
          take.source = { kind = "PCM_source*", file = "", parent = take.source, section = tspec.section }
        end
      end
    end
  end

  -- project and tracks
  function r.CountTracks(_) return #state.tracks end
  function r.GetTrack(_, idx) return state.tracks[idx + 1] end
  function r.InsertTrackAtIndex(idx, _)
    assert(idx >= 0 and idx <= #state.tracks, "stub: InsertTrackAtIndex out of range")
    table.insert(state.tracks, idx + 1, new_track(""))
  end
  function r.GetMediaTrackInfo_Value(track, key)
    if key == "IP_TRACKNUMBER" then return track_index(track) + 0.0 end
    if key == "I_FOLDERDEPTH" then return track.folderdepth + 0.0 end
    error("stub: GetMediaTrackInfo_Value " .. key .. " is not implemented", 2)
  end
  function r.SetMediaTrackInfo_Value(track, key, value)
    if key ~= "I_FOLDERDEPTH" then error("stub: SetMediaTrackInfo_Value " .. key .. " is not implemented", 2) end
    track.folderdepth = math.floor(value)
    return true
  end
  function r.GetSetMediaTrackInfo_String(track, key, value, set)
    assert(key == "P_NAME", "stub: only P_NAME")
    if set then track.name = value end
    return true, track.name
  end
  function r.CountSelectedTracks(_)
    local n = 0
    for _, t in ipairs(state.tracks) do if t.selected then n = n + 1 end end
    return n
  end
  function r.GetSelectedTrack(_, idx)
    local n = 0
    for _, t in ipairs(state.tracks) do
      if t.selected then
        if n == idx then return t end
        n = n + 1
      end
    end
  end
  function r.CountTrackMediaItems(track) return #track.items end
  function r.GetTrackMediaItem(track, idx) return track.items[idx + 1] end

  -- items and takes
  function r.CountSelectedMediaItems(_) return #all_items(true) end
  function r.GetSelectedMediaItem(_, idx) return all_items(true)[idx + 1] end
  function r.GetMediaItem_Track(item) return item.track end
  function r.AddMediaItemToTrack(track) return new_item(track) end
  local ITEM_KEYS = { D_POSITION = "position", D_LENGTH = "length", B_MUTE = "mute" }
  function r.GetMediaItemInfo_Value(item, key)
    assert(ITEM_KEYS[key], "stub: item key " .. key)
    return item[ITEM_KEYS[key]] + 0.0
  end
  function r.SetMediaItemInfo_Value(item, key, value)
    assert(ITEM_KEYS[key], "stub: item key " .. key)
    item[ITEM_KEYS[key]] = value
    return true
  end
  function r.GetActiveTake(item) return item.active end
  function r.SetActiveTake(take) take.item.active = take end
  function r.CountTakes(item) return #item.takes end
  function r.GetTake(item, idx) return item.takes[idx + 1] end
  function r.AddTakeToMediaItem(item) return new_take(item) end
  function r.TakeIsMIDI(take) return take.midi end
  local TAKE_KEYS = { D_STARTOFFS = "startoffs", D_PLAYRATE = "playrate", D_PITCH = "pitch", B_PPITCH = "ppitch" }
  function r.GetMediaItemTakeInfo_Value(take, key)
    assert(TAKE_KEYS[key], "stub: take key " .. key)
    return take[TAKE_KEYS[key]] + 0.0
  end
  function r.SetMediaItemTakeInfo_Value(take, key, value)
    assert(TAKE_KEYS[key], "stub: take key " .. key)
    take[TAKE_KEYS[key]] = value
    return true
  end
  function r.GetSetMediaItemTakeInfo_String(take, key, value, set)
    assert(key == "P_NAME", "stub: only P_NAME")
    if set then take.name = value end
    return true, take.name
  end
  function r.GetMediaItemTake_Source(take) return take.source end
  function r.SetMediaItemTake_Source(take, source) take.source = source; return true end
  function r.PCM_Source_CreateFromFile(path) return { kind = "PCM_source*", file = path } end
  function r.PCM_Source_CreateFromFileEx(path, forcenoMidiImp)
    assert(type(forcenoMidiImp) == "boolean", "stub: PCM_Source_CreateFromFileEx(filename, forcenoMidiImp)")
    return { kind = "PCM_source*", file = path, ex = true, no_midi_import = forcenoMidiImp }
  end
  function r.GetMediaSourceFileName(source, _) return source.file or "" end
  function r.GetMediaSourceParent(source) return source.parent end
  function r.PCM_Source_GetSectionInfo(source)
    local section = source.section
    if not section then return false, 0.0, 0.0, false end
    return true, section[1] + 0.0, section[2] + 0.0, section[3] or false
  end
  function r.GetMediaSourceLength(source)
    if source.section then return source.section[2] + 0.0, false end
    return stub.wav_seconds(source.file), false
  end
  function r.ValidatePtr2(_, ptr, kind)
    if type(ptr) ~= "table" or ptr.kind ~= kind then return false end
    if kind == "MediaTrack*" then
      for _, t in ipairs(state.tracks) do if t == ptr then return true end end
      return false
    end
    if kind == "MediaItem*" then
      for _, item in ipairs(all_items(false)) do if item == ptr then return true end end
      return false
    end
    return true
  end

  -- time, tempo
  function r.GetSet_LoopTimeRange(set, _, s, e, _)
    if set then state.loop = { s, e } end
    return state.loop[1], state.loop[2]
  end
  function r.TimeMap_GetTimeSigAtTime(_, _) return num, denom, tempo + 0.0 end
  function r.Master_GetTempo() return tempo + 0.0 end
  function r.TimeMap2_timeToQN(_, t) return t * tempo / 60 end
  function r.TimeMap2_QNToTime(_, qn) return qn * 60 / tempo end
  function r.time_precise() return now() end

  -- environment, settings, UI
  function r.GetOS() return scenario.os or "Other" end
  function r.GetResourcePath() return scenario.resource_path or "/tmp" end
  function r.get_action_context() return false, scenario.script, 0, 0, -1, -1, -1 end
  function r.RecursiveCreateDirectory(path, _)
    os.execute("mkdir -p '" .. path:gsub("'", [['\'']]) .. "'")
    return 1
  end
  function r.GetExtState(section, key) return state.ext[section .. "/" .. key] or "" end
  function r.HasExtState(section, key) return state.ext[section .. "/" .. key] ~= nil end
  function r.SetExtState(section, key, value, _) state.ext[section .. "/" .. key] = value end
  function r.DeleteExtState(section, key, _) state.ext[section .. "/" .. key] = nil end
  function r.ShowMessageBox(text, title, kind)
    table.insert(state.messages, { text = text, title = title, type = kind })
    local answer = table.remove(scenario.message_answers or {}, 1)
    return answer or (kind == 4 and 7 or 1)
  end
  function r.ShowConsoleMsg(text) table.insert(state.console, text) end
  function r.GetUserInputs(title, n, captions, defaults)
    local sep = captions:match("separator=(.)$") or ","
    local fields = {}
    for caption in (captions .. ","):gmatch("([^,]*),") do
      if not caption:match("^extrawidth=") and not caption:match("^separator=") then fields[#fields + 1] = caption end
    end
    assert(#fields == n, ("stub: GetUserInputs got %d captions for %d fields"):format(#fields, n))
    table.insert(state.inputs, { title = title, captions = fields, defaults = defaults, separator = sep })
    local answer = table.remove(scenario.inputs or {}, 1)
    if not answer then return false, "" end
    assert(#answer == n, "stub: the scenario's answer has the wrong number of fields")
    return true, table.concat(answer, sep)
  end
  function r.ExecProcess(cmd, timeout)
    local script = cmd:match("^/bin/sh (%S+)$")  -- what the scripts start: keep the command line it runs
    local fh = script and io.open(script, "r")
    table.insert(state.exec, { cmd = cmd, timeout = timeout, script = fh and fh:read("a") or false })
    if fh then fh:close() end
    if timeout == -1 or timeout == -2 then
      os.execute(cmd .. " >/dev/null 2>&1 &")
      return ""
    end
    local p = io.popen(cmd .. " 2>&1")  -- a waiting call: the test fails it, but run it as Reaper would
    local out = p:read("a")
    local _, _, code = p:close()
    return tostring(code) .. "\n" .. out
  end
  function r.Undo_BeginBlock() state.undo_depth = state.undo_depth + 1 end
  function r.Undo_EndBlock(name, _)
    state.undo_depth = state.undo_depth - 1
    table.insert(state.undo, name)
  end
  function r.PreventUIRefresh(n) state.refresh = state.refresh + n end
  function r.UpdateArrange() end
  function r.Main_OnCommand(cmd, _) table.insert(state.commands, cmd) end
  function r.defer(fn) table.insert(state.deferred, fn) end
  function r.atexit(fn) table.insert(state.atexit, fn) end

  function r.APIExists(name) return rawget(r, name) ~= nil end

  -- ReaImGui, when the scenario installs it: {answers = {[label] = value}, press = "OK" or "Cancel", version
  -- (default "0.9.3"), collapsed = {frame numbers} (Begin returns false then: the user folded the window),
  -- broken = true (Begin raises, as an unknown ReaImGui version might)}. Values are typed on frame 2, the
  -- button is pressed on frame 3; frames, Begin/End balance and labels are recorded.
  -- As ReaImGui does: GetVersion returns (imgui_version, reaimgui_version) before 0.7, which added
  -- imgui_version_num in between. Before 0.5 every Begin needs its End; from 0.5 on, a Begin that returns
  -- false ends the window itself, and End follows only a Begin that returned true. A wrong End raises.
  local im = scenario.imgui
  if im then
    state.imgui = { frames = 0, open_windows = 0, labels = {}, unbalanced = false }
    local ims = state.imgui
    local version = im.version or "0.9.3"
    local major, minor = version:match("^(%d+)%.(%d+)")
    major, minor = tonumber(major), tonumber(minor)
    local since = function(a, b) return major > a or (major == a and minor >= b) end
    local function collapsed(frame)
      for _, f in ipairs(im.collapsed or {}) do
        if f == frame then return true end
      end
      return false
    end
    function r.ImGui_CreateContext(label) return { kind = "ImGui_Context*", label = label } end
    function r.ImGui_GetVersion()
      if since(0, 7) then return "1.90.5", 19050, version end
      return "1.83", version
    end
    function r.ImGui_Cond_FirstUseEver() return 4 end
    function r.ImGui_SetNextWindowSize() end
    function r.ImGui_Begin(_, _, _)
      if im.broken then error("ImGui_Begin: expected 4 arguments (stub: an unknown ReaImGui)") end
      if ims.open_windows ~= 0 then
        ims.unbalanced = true
        error("ImGui_Begin: missing End() for the window of the previous frame")
      end
      ims.frames = ims.frames + 1
      local visible = not collapsed(ims.frames)
      if visible or not since(0, 5) then ims.open_windows = ims.open_windows + 1 end
      return visible, true
    end
    function r.ImGui_End(_)
      if ims.open_windows == 0 then
        ims.unbalanced = true
        error("ImGui_End: calling End() too many times")
      end
      ims.open_windows = ims.open_windows - 1
    end
    local function typed(label, value)
      ims.labels[label] = true
      local answer = (im.answers or {})[label]
      if ims.frames == 2 and answer ~= nil then return true, answer end
      return false, value
    end
    function r.ImGui_InputText(_, label, value) return typed(label, value) end
    function r.ImGui_InputInt(_, label, value)
      assert(math.type(value) == "integer", "stub: InputInt needs an integer")
      return typed(label, value)
    end
    function r.ImGui_Checkbox(_, label, value)
      assert(type(value) == "boolean", "stub: Checkbox needs a boolean")
      return typed(label, value)
    end
    function r.ImGui_Button(_, label) return ims.frames >= 3 and label == (im.press or "OK") end
    function r.ImGui_SameLine() end
  end

  setmetatable(r, { __index = function(_, name) error("stub: reaper." .. name .. " is not implemented", 2) end })
  _G.reaper = r

  -- gfx: records what is drawn; clicks Cancel when the scenario says so
  local g = { w = 0, h = 0, x = 0, y = 0, mouse_x = 0, mouse_y = 0, mouse_cap = 0 }
  local gs = state.gfx
  function g.init(title, w, h)
    gs.inits, gs.open, gs.title = gs.inits + 1, true, title
    g.w, g.h = w, h
  end
  function g.quit() gs.quits, gs.open = gs.quits + 1, false end
  function g.getchar()
    if not gs.open then return -1 end
    if g.mouse_cap == 1 then
      g.mouse_cap = 0  -- release: the click happens now
    elseif scenario.click_cancel_when and not gs.clicked and gs.cancel_at then
      for text in pairs(gs.drawn) do
        if text:find(scenario.click_cancel_when, 1, true) then
          gs.clicked = true
          g.mouse_x, g.mouse_y, g.mouse_cap = gs.cancel_at[1] + 3, gs.cancel_at[2] + 3, 1
          break
        end
      end
    end
    if scenario.delete_selected_items_when and not gs.deleted then  -- the user deletes them while a job runs
      for text in pairs(gs.drawn) do
        if text:find(scenario.delete_selected_items_when, 1, true) then
          gs.deleted = true
          for _, t in ipairs(state.tracks) do
            for i = #t.items, 1, -1 do if t.items[i].selected then table.remove(t.items, i) end end
          end
          break
        end
      end
    end
    if scenario.close_window_when and gs.open then
      for text in pairs(gs.drawn) do
        if text:find(scenario.close_window_when, 1, true) then
          gs.closed_by_user, gs.open = true, false
          return -1
        end
      end
    end
    return 0
  end
  function g.drawstr(text)
    gs.drawn[text] = true
    if text == "Cancel" then gs.cancel_at = { g.x, g.y } end
  end
  function g.measurestr(text) return #text * 7, 14 end
  function g.set() end
  function g.rect() end
  function g.setfont() end
  function g.update() end
  _G.gfx = g
  return state
end

--- Runs the deferred functions until none is left; records the longest call (a frozen Reaper would show here).
function stub.run_deferred(state, guard)
  local t0 = now()
  while #state.deferred > 0 do
    if now() - t0 > guard then
      table.insert(state.errors, ("guard: deferred functions still running after %g s"):format(guard))
      break
    end
    sleep(0.05)
    local fns = state.deferred
    state.deferred = {}
    for _, fn in ipairs(fns) do stub.call(state, fn) end
  end
  for _, fn in ipairs(state.atexit) do stub.call(state, fn) end
  state.elapsed = now() - t0
end

function stub.call(state, fn)
  local t = now()
  local ok, err = xpcall(fn, debug.traceback)
  if not ok then table.insert(state.errors, tostring(err)) end
  state.calls = state.calls + 1
  state.max_call = math.max(state.max_call, now() - t)
end

-- --- the dump: JSON for the test ---------------------------------------------------------------------------

local function encode(value, out)
  local t = type(value)
  if t == "table" then
    if #value > 0 or next(value) == nil and getmetatable(value) ~= "object" then
      out[#out + 1] = "["
      for i, v in ipairs(value) do
        if i > 1 then out[#out + 1] = "," end
        encode(v, out)
      end
      out[#out + 1] = "]"
    else
      out[#out + 1] = "{"
      local keys = {}
      for k in pairs(value) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        encode(k, out)
        out[#out + 1] = ":"
        encode(value[k], out)
      end
      out[#out + 1] = "}"
    end
  elseif t == "string" then
    out[#out + 1] = '"' .. value:gsub('[%c"\\]', function(c) return ("\\u%04x"):format(c:byte()) end) .. '"'
  elseif t == "number" then
    local finite = value == value and value ~= math.huge and value ~= -math.huge
    out[#out + 1] = finite and ("%.17g"):format(value) or "null"
  elseif t == "boolean" then
    out[#out + 1] = tostring(value)
  else
    out[#out + 1] = "null"
  end
end

local function object(t) return setmetatable(t, { __metatable = "object" }) end

function stub.dump(state, path)
  local tracks = {}
  for _, t in ipairs(state.tracks) do
    local items = {}
    for _, item in ipairs(t.items) do
      local takes, active = {}, 0
      for i, take in ipairs(item.takes) do
        if take == item.active then active = i end
        local source = take.source or {}
        takes[i] = object({ name = take.name, file = source.file or "",
          startoffs = take.startoffs, playrate = take.playrate, pitch = take.pitch, preserve_pitch = take.ppitch,
          -- how the source was made: "file" (PCM_Source_CreateFromFile), "file_ex_no_import"
          -- (PCM_Source_CreateFromFileEx forcing a file reference) or "file_ex" (the preference decides)
          source = source.ex and (source.no_midi_import and "file_ex_no_import" or "file_ex") or "file" })
      end
      items[#items + 1] = object({ position = item.position, length = item.length, active_take = active,
        takes = takes })
    end
    tracks[#tracks + 1] = object({ name = t.name, folderdepth = t.folderdepth, items = items })
  end
  local drawn = {}
  for text in pairs(state.gfx.drawn) do drawn[#drawn + 1] = text end
  table.sort(drawn)
  local ext = object({})
  for k, v in pairs(state.ext) do ext[k] = v end
  local g = state.gfx
  local dump = object({
    tracks = tracks, messages = state.messages, inputs = state.inputs, exec = state.exec, undo = state.undo,
    commands = state.commands, console = state.console, errors = state.errors, ext = ext, drawn = drawn,
    gfx = object({ inits = g.inits, quits = g.quits, open = g.open, clicked = g.clicked,
      closed_by_user = g.closed_by_user or false }),
    max_call = state.max_call, calls = state.calls, elapsed = state.elapsed or 0,
    deferred_left = #state.deferred, undo_depth = state.undo_depth, refresh = state.refresh,
    imgui = state.imgui and object({ frames = state.imgui.frames, unbalanced = state.imgui.unbalanced,
      open_windows = state.imgui.open_windows, labels = object(state.imgui.labels) }) or false,
  })
  for _, m in ipairs(state.messages) do object(m) end
  for _, m in ipairs(state.inputs) do object(m) end
  for _, m in ipairs(state.exec) do object(m) end
  local out = {}
  encode(dump, out)
  local fh = assert(io.open(path, "w"))
  fh:write(table.concat(out))
  fh:close()
end

return stub
