-- @noindex
-- Stembridge: Status (part of the Stembridge package; see "Stembridge_Separate selected items.lua" for the
-- package header).
--
-- Says which stembridge command the scripts use, whether the daemon answers (its version, address and
-- engines), which models it can run and what its queue holds, then offers to edit the settings (ExtState section "Stembridge").

local dir = ({ reaper.get_action_context() })[2]:match("^(.*)[/\\]")
local sb = dofile(dir .. "/stembridge/lib.lua")
local ui, request = sb.ui, sb.request
local TITLE = "Stembridge: Status"
local SETTING_KEYS = {
  "executable", "host", "port", "token", "state_dir", "out", "engine", "stems", "dialogs", "midi",
}

local function edit_settings()
  local fields = {}
  for i, key in ipairs(SETTING_KEYS) do fields[i] = { key:gsub("_", " "), request.setting(key, "") } end
  local values = ui.ask("Stembridge settings (empty: default)", fields)
  if not values then return end
  for i, key in ipairs(SETTING_KEYS) do
    if values[i] == "" then
      reaper.DeleteExtState(request.SECTION, key, true)
    else
      reaper.SetExtState(request.SECTION, key, values[i], true)
    end
  end
end

local function report(lines)
  lines[#lines + 1] = "\nEdit the settings (the stembridge command, the daemon's address, where renders go)?"
  if reaper.ShowMessageBox(table.concat(lines, "\n"), TITLE, 4) == 6 then edit_settings() end
end

local function main()
  local exe, err = request.find_executable()
  if not exe then return report({ err }) end
  local lines = { "stembridge command: " .. exe }
  local function on_ping(result)
    lines[#lines + 1] = ("Daemon: stembridge %s at %s, answering"):format(
      tostring(result.version), tostring(result.daemon))
    local engines = {}
    for _, e in ipairs(type(result.engines) == "table" and result.engines or {}) do
      engines[#engines + 1] = tostring(e)
    end
    lines[#lines + 1] = "Engines: " .. (#engines > 0 and table.concat(engines, ", ") or "none")
  end
  local function on_models(result)
    local available, missing = {}, {}
    for _, m in ipairs(type(result.models) == "table" and result.models or {}) do
      local tasks = type(m.tasks) == "table" and table.concat(m.tasks, "/") or ""
      if m.available == true then
        available[#available + 1] = ("%s (%s)"):format(tostring(m.name), tasks)
      else
        missing[#missing + 1] = tostring(m.name)
      end
    end
    lines[#lines + 1] = "Models ready: " .. (#available > 0 and table.concat(available, ", ") or "none")
    if #missing > 0 then
      lines[#lines + 1] = ("Models not installed: %s (`stembridge models` says why and how to get them)"):format(
        table.concat(missing, ", "))
    end
  end
  local function on_queue(result)
    local q = type(result.queue) == "table" and result.queue or {}
    local waiting = tonumber(q.waiting) or 0
    if q.running ~= true and waiting == 0 then
      lines[#lines + 1] = "Queue: idle, no job running or waiting"
      return
    end
    local running = "no job running"
    if q.running == true then
      local whose = (q.job and q.job ~= "") and ("yours, " .. tostring(q.job)) or "another machine's"
      running = ("a job running (%s, %d%% %s)"):format(whose, math.floor((tonumber(q.fraction) or 0) * 100 + 0.5),
        tostring(q.stage or ""))
    end
    local mine = tonumber(q.yours_waiting) or 0
    lines[#lines + 1] = ("Queue: %s; %d waiting%s"):format(running, waiting,
      mine > 0 and (" (%d yours)"):format(mine) or "")
  end
  ui.run(TITLE, {
    { op = "ping", args = {}, label = "Asking the daemon", on_done = on_ping },
    { op = "models", args = {}, label = "Asking for models", on_done = on_models },
    { op = "queue", args = {}, label = "Asking for the queue", on_done = on_queue },
  }, function(summary)
    for _, message in ipairs(summary.messages) do lines[#lines + 1] = "\n" .. message end
    if not summary.cancelled then report(lines) end
  end, true)
end

main()
