-- @noindex
-- What the user sees: messages, the input dialog, and the progress window that runs requests one after another
-- from reaper.defer, with a Cancel button, so that Reaper never waits for a job.

local request = ...
local ui = {}

ui.TITLE = "Stembridge"
ui.WIDTH, ui.HEIGHT = 440, 112
ui.CANCEL_WAIT = 15   -- seconds to wait for a cancelled job's answer before closing anyway
ui.CANCEL_RESEND = 2  -- seconds between cancel requests (the first may beat the job to the daemon)

function ui.message(text, title)
  reaper.ShowMessageBox(text, title or ui.TITLE, 0)
end

--- A check box's answer typed in the plain dialog: true, false, or nil for something else.
function ui.yes(text)
  local word = tostring(text or ""):lower()
  if word == "y" or word == "yes" or word == "1" or word == "x" or word == "on" then return true end
  if word == "n" or word == "no" or word == "0" or word == "" or word == "off" then return false end
  return nil
end

--- Asks for values with GetUserInputs. `fields` is a list of {caption, default}, a check box {caption, bool,
-- check = true} asked as "y" or "n"; returns the values as a list of strings (spaces trimmed), or nil when the
-- user cancelled. Captions must not contain commas.
function ui.ask(title, fields)
  local captions, defaults = {}, {}
  for i, field in ipairs(fields) do
    captions[i], defaults[i] = field[1], tostring(field[2] or "")
    if field.check then captions[i], defaults[i] = field[1] .. " (y/n)", field[2] and "y" or "n" end
  end
  local ok, answer = reaper.GetUserInputs(title, #fields,
    table.concat(captions, ",") .. ",extrawidth=220,separator=\n", table.concat(defaults, "\n"))
  if not ok then return nil end
  local values = {}
  for value in (answer .. "\n"):gmatch("([^\n]*)\n") do values[#values + 1] = value:match("^%s*(.-)%s*$") end
  return values
end

local function version_at_least(text, major, minor)
  local a, b = tostring(text or ""):match("^(%d+)%.(%d+)")
  a, b = tonumber(a), tonumber(b)
  return a ~= nil and (a > major or (a == major and b >= minor))
end

--- Asks for values, then calls `answer(values)` (a list of strings, or nil when the user cancelled). With
-- ReaImGui installed (and the setting `dialogs` not "classic") the form is a ReaImGui window run from defer;
-- else, or if ReaImGui fails in any way, GetUserInputs. `fields` is a list of {caption, default, int = bool,
-- check = bool}; a check box's value comes back as "y" or "n" from either dialog (see ui.yes).
function ui.form(title, fields, answer)
  if not reaper.APIExists("ImGui_CreateContext") or request.setting("dialogs") == "classic" then
    return answer(ui.ask(title, fields))
  end
  local ok, ctx = pcall(reaper.ImGui_CreateContext, title)
  if not ok then return answer(ui.ask(title, fields)) end
  -- ReaImGui's own version is the last value of GetVersion (the 2nd before 0.7, the 3rd from 0.7 on). Before
  -- 0.5 every Begin needs an End; from 0.5 on, a Begin that returns false (a folded window) ends the window
  -- itself, and End must follow only a Begin that returned true.
  local reported = { reaper.ImGui_GetVersion() }
  local end_only_if_visible = version_at_least(reported[#reported], 0, 5)
  local values, sized = {}, false
  for i, field in ipairs(fields) do
    if field.check then
      values[i] = field[2] and true or false
    else
      values[i] = field.int and math.floor(tonumber(field[2]) or 0) or tostring(field[2] or "")
    end
  end
  local function frame()
    if not sized then
      reaper.ImGui_SetNextWindowSize(ctx, 480, 0, reaper.ImGui_Cond_FirstUseEver())
      sized = true
    end
    local visible, open = reaper.ImGui_Begin(ctx, title, true)
    local choice
    if visible then
      for i, field in ipairs(fields) do
        local _
        if field.check then
          _, values[i] = reaper.ImGui_Checkbox(ctx, field[1], values[i])
        elseif field.int then
          _, values[i] = reaper.ImGui_InputInt(ctx, field[1], values[i])
        else
          _, values[i] = reaper.ImGui_InputText(ctx, field[1], values[i])
        end
      end
      if reaper.ImGui_Button(ctx, "OK") then choice = "ok" end
      reaper.ImGui_SameLine(ctx)
      if reaper.ImGui_Button(ctx, "Cancel") then choice = "cancel" end
      if end_only_if_visible then reaper.ImGui_End(ctx) end
    end
    if not end_only_if_visible then reaper.ImGui_End(ctx) end
    return choice or (not open and "cancel") or nil
  end
  local function loop()
    local fine, choice = pcall(frame)
    if not fine then return answer(ui.ask(title, fields)) end  -- a ReaImGui this code does not know: plain dialog
    if choice == "cancel" then return answer(nil) end
    if choice == "ok" then
      local out = {}
      for i, value in ipairs(values) do
        if type(value) == "boolean" then value = value and "y" or "n" end
        out[i] = tostring(value):match("^%s*(.-)%s*$")
      end
      return answer(out)
    end
    reaper.defer(loop)
  end
  reaper.defer(loop)
end

-- --- the progress window -------------------------------------------------------------------------------------

local Window = {}
Window.__index = Window

local function open_window(title)
  gfx.init(title, ui.WIDTH, ui.HEIGHT)
  gfx.setfont(1, "Arial", 15)
  return setmetatable({ title = title, line = "", detail = "", fraction = 0, was_down = false }, Window)
end

function Window:button()
  return gfx.w - 104, gfx.h - 38, 92, 28
end

--- Draws one frame; returns true when the user asked to cancel (the button, Escape, or closing the window).
function Window:frame()
  local char = gfx.getchar()
  if char < 0 then self.closed = true end
  gfx.set(0.16, 0.16, 0.18, 1)
  gfx.rect(0, 0, gfx.w, gfx.h, 1)
  gfx.set(0.92, 0.92, 0.92, 1)
  gfx.x, gfx.y = 12, 10
  gfx.drawstr(self.line)
  gfx.x, gfx.y = 12, 32
  gfx.drawstr(self.detail)
  local bar_w = gfx.w - 136
  gfx.set(0.3, 0.3, 0.33, 1)
  gfx.rect(12, gfx.h - 32, bar_w, 16, 1)
  gfx.set(0.35, 0.7, 0.45, 1)
  gfx.rect(12, gfx.h - 32, math.floor(bar_w * math.max(0, math.min(1, self.fraction)) + 0.5), 16, 1)
  local x, y, w, h = self:button()
  gfx.set(0.45, 0.45, 0.5, 1)
  gfx.rect(x, y, w, h, 1)
  gfx.set(1, 1, 1, 1)
  gfx.x, gfx.y = x + (w - gfx.measurestr("Cancel")) / 2, y + 6
  gfx.drawstr("Cancel")
  gfx.update()
  local down = gfx.mouse_cap & 1 == 1
  local inside = gfx.mouse_x >= x and gfx.mouse_x < x + w and gfx.mouse_y >= y and gfx.mouse_y < y + h
  local clicked = self.was_down and not down and inside
  self.was_down = down
  return clicked or char == 27 or self.closed
end

function Window:close()
  if not self.closed then gfx.quit() end
  self.closed = true
end

-- --- running requests ------------------------------------------------------------------------------------------

local function percent(fraction)
  return ("%d%%"):format(math.floor((fraction or 0) * 100 + 0.5))
end

local FATAL = { unreachable = true, not_started = true, bad_result = true }

--- Runs requests one after another without blocking Reaper, in a progress window with a Cancel button.
--
-- `steps` is a list of {op = "separate", args = {...}, label = "Separating song.wav", on_done = function(result)}.
-- on_done gets a done result ({outputs = ..., paths = ...}) and may return a message for the user. A failed
-- step's message is kept and the next step runs, unless the daemon or the command cannot be reached at all.
-- When everything has ended (or was cancelled), the messages are shown together and `finish(summary)` is
-- called with {cancelled = bool, failed = n, done = n, messages = {...}}; with `keep_messages`, finish gets
-- them to show in its own words and nothing is shown here.
function ui.run(title, steps, finish, keep_messages)
  local window = { closed = true, close = function() end }  -- opened when the first request has started
  local messages = {}
  local summary = { cancelled = false, failed = 0, done = 0, messages = messages }
  local index, job, cancelled_at, last_cancel, cancellers = 0, nil, nil, nil, {}

  local function stop()
    window:close()
    for _, c in ipairs(cancellers) do request.poll(c) end
    if #messages > 0 and not keep_messages then ui.message(table.concat(messages, "\n\n"), title) end
    if finish then finish(summary) end
  end

  local function next_step()
    index = index + 1
    local step = steps[index]
    if not step or summary.cancelled then return false end
    local err
    job, err = request.start(step.op, step.args)
    if not job then
      messages[#messages + 1] = err
      return false
    end
    if index == 1 then window = open_window(title) end
    window.line = step.label .. (#steps > 1 and (" (%d of %d)"):format(index, #steps) or "")
    window.detail, window.fraction = "starting stembridge...", 0
    return true
  end

  local function handle(result)
    local step = steps[index]
    if result.status == "done" and not summary.cancelled then
      local ok, note = pcall(step.on_done, result)
      if not ok then
        messages[#messages + 1] = ("%s: the result could not be added to the project: %s"):format(step.label, note)
        summary.failed = summary.failed + 1
      else
        summary.done = summary.done + 1
        if note then messages[#messages + 1] = note end
      end
      return true
    end
    if result.status == "done" then return false end  -- cancelled too late: the files stay, nothing is added
    local text = request.describe_error(result)
    if text then
      messages[#messages + 1] = (#steps > 1 and (step.label .. ": ") or "") .. text
      summary.failed = summary.failed + 1
    end
    local code = type(result.error) == "table" and result.error.code
    return not FATAL[code]
  end

  local function tick()
    local wants_cancel = not window.closed and window:frame() or window.closed  -- closing it cancels too
    local now = reaper.time_precise()
    if wants_cancel and not summary.cancelled then
      summary.cancelled, cancelled_at = true, now
      window.detail = "cancelling..."
    end
    if summary.cancelled and (not last_cancel or now - last_cancel >= ui.CANCEL_RESEND) then
      last_cancel = now
      cancellers[#cancellers + 1] = request.cancel(job)
    end
    for i = #cancellers, 1, -1 do
      if request.poll(cancellers[i]) then table.remove(cancellers, i) end
    end
    local result = request.poll(job)
    if result then
      if not handle(result) or not next_step() then return stop() end
    elseif summary.cancelled and now - cancelled_at > ui.CANCEL_WAIT then
      messages[#messages + 1] = "The job did not answer the cancel request; it may still finish in the background."
      return stop()
    elseif not summary.cancelled then
      local fraction, stage = request.progress(job)
      if fraction then
        window.fraction = fraction
        local ahead = tonumber(stage:match("^queued (%d+)") or "")
        window.detail = ahead and (ahead > 0 and ("waiting: %d job(s) ahead"):format(ahead) or "queued")
          or ("%s  %s"):format(stage, percent(fraction))
      end
    end
    reaper.defer(tick)
  end

  if next_step() then
    reaper.defer(tick)
  else
    stop()
  end
end

return ui
