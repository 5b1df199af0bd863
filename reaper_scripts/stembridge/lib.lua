-- @noindex
-- The Stembridge ReaScripts' shared code. An action script loads it from its own folder:
--   local dir = ({ reaper.get_action_context() })[2]:match("^(.*)[/\\]")
--   local sb = dofile(dir .. "/stembridge/lib.lua")
-- and gets sb.json, sb.request (running `stembridge request`), sb.ui (dialogs, the progress window) and
-- sb.project (items, tracks, takes, tempo).

local here = debug.getinfo(1, "S").source:match("^@?(.*[/\\])") or ""

local function load(name, ...)
  local chunk, err = loadfile(here .. name .. ".lua")
  if not chunk then
    error(("Stembridge: cannot load %s%s.lua (reinstall the package): %s"):format(here, name, err), 0)
  end
  return chunk(...)
end

local json = load("json")
local request = load("request", json)
local ui = load("ui", request)
local project = load("project")

return { json = json, request = request, ui = ui, project = project, VERSION = "0.1.0" }
