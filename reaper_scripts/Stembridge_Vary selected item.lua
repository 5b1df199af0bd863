-- @noindex
-- Stembridge: Vary selected item (part of the Stembridge package; see "Stembridge_Separate selected items.lua"
-- for the package header).
--
-- Makes N variations of each selected item and adds them as takes of that item, the first one active, so the
-- user flips between them (the original stays as the first take). The daemon varies the take's whole source
-- file, at the tempo the file plays at (project tempo / playrate), keeping its length; each new take gets the
-- original take's start offset, playrate and pitch, so it shows the same part of the variation, in place.
-- The beat grid of a variation starts at the file's start: a file that does not start on a beat varies less
-- tightly (render or glue the item first).

local dir = ({ reaper.get_action_context() })[2]:match("^(.*)[/\\]")
local sb = dofile(dir .. "/stembridge/lib.lua")
local project, ui, request = sb.project, sb.ui, sb.request
local TITLE = "Stembridge: Vary selected item"

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
      local take = project.add_take(info.item, out.path, name, info)
      first = first or take
    end
    reaper.SetActiveTake(first)
  end)
end

local function main()
  local infos, skipped = project.selected_items()
  if #infos == 0 then
    local why = #skipped > 0 and ("\n\n" .. table.concat(skipped, "\n")) or ""
    return ui.message("Select an audio item to vary." .. why, TITLE)
  end
  local function vary(values)
    local variations, strength = tonumber(values[1]), tonumber(values[2])
    if not variations or variations ~= math.floor(variations) or variations < 1 or variations > 16 then
      return ui.message(("Variations must be a whole number from 1 to 16, got %q."):format(values[1]), TITLE)
    end
    if not strength or strength < 0 or strength > 1 then
      return ui.message(("Strength must be a number from 0 to 1, got %q."):format(values[2]), TITLE)
    end
    reaper.SetExtState(request.SECTION, "last_vary_variations", tostring(math.floor(variations)), true)
    reaper.SetExtState(request.SECTION, "last_strength", values[2], true)

    local steps = {}
    for _, info in ipairs(infos) do
      local bpm, num, denom = project.tempo_at(info.position)
      local args = {
        info.file, "--variations", tostring(math.floor(variations)), "--strength", project.number(strength),
        "--bpm", project.number(bpm / info.playrate), "--time-signature", ("%d/%d"):format(num, denom),
        "--seed", tostring(math.random(1, 999999)),
      }
      for _, key in ipairs({ "engine", "out" }) do
        local value = request.setting(key)
        if value then args[#args + 1], args[#args + 2] = "--" .. key, value end
      end
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
  }, function(values)
    if values then vary(values) end
  end)
end

main()
