-- @noindex
-- Running `stembridge request ... --result-file F` from Reaper without waiting for it.
--
-- Lua in Reaper has no sockets, so every request is a `stembridge request` process started with
-- reaper.ExecProcess(cmd, -2), which returns at once. The command line is written to a small shell script (a
-- batch file on Windows) beside F, so that quoting is ours and not ExecProcess's, and so that the exit code and
-- whatever the command printed land in files too: F.exit and F.log. A job is then polled from reaper.defer:
--   F           the result, written atomically when the request ends (done or error)
--   F.progress  one "<fraction> <stage>" line per progress message
--   F.exit      the exit code, written after the command ended; without F it means the command never got as
--               far as the request (not installed, a broken virtualenv, bad arguments)

local json = ...
local request = {}

-- The settings live in Reaper's ExtState, section "Stembridge" (edited by "Stembridge: Status"; see
-- reaper_scripts/README.md): executable, host, port, token, state_dir (passed to `stembridge request`), out,
-- engine, stems (job options), dialogs ("classic": GetUserInputs even with ReaImGui installed), midi ("1": jobs
-- also make a MIDI file per audio file; the MIDI box of Generate's and Vary's forms sets it, Separate follows it).
request.SECTION = "Stembridge"
request.START_TIMEOUT = 30  -- seconds a command may take to show any sign of life
request.EXIT_GRACE = 2      -- seconds to wait for F.exit once F is there

local IS_WINDOWS = reaper.GetOS():match("^Win") ~= nil
local SEP = IS_WINDOWS and "\\" or "/"
local EXE_NAME = IS_WINDOWS and "stembridge.exe" or "stembridge"

--- A setting from Reaper's ExtState (section "Stembridge"), or `default` when unset or empty.
function request.setting(key, default)
  local value = reaper.GetExtState(request.SECTION, key)
  if value == nil or value == "" then return default end
  return value
end

--- Whether jobs should also make MIDI files (`--midi`, which sends `midi 1`): the `midi` setting is "1".
function request.midi_wanted()
  return request.setting("midi") == "1"
end

--- Remembers the MIDI choice of a form for the next job (Separate has no form and follows it).
function request.remember_midi(on)
  reaper.SetExtState(request.SECTION, "midi", on and "1" or "0", true)
end

function request.is_file(path)
  local fh = path and io.open(path, "rb")
  if not fh then return false end
  local ok = fh:read(1) ~= nil  -- a folder opens on some systems but cannot be read
  fh:close()
  return ok
end

function request.read_file(path)
  local fh = io.open(path, "rb")
  if not fh then return nil end
  local text = fh:read("a")
  fh:close()
  return text
end

local function write_file(path, text)
  local fh, err = io.open(path, "wb")
  if not fh then return nil, err end
  fh:write(text)
  fh:close()
  return true
end

function request.basename(path)
  return (path:match("([^/\\]+)$") or path)
end

--- Places to look for the stembridge command besides PATH: where pip, pipx and the usual virtualenvs put it.
local function common_places()
  local home = os.getenv(IS_WINDOWS and "USERPROFILE" or "HOME") or ""
  local places = {}
  local function add(dir) if dir and dir ~= "" then places[#places + 1] = dir end end
  if IS_WINDOWS then
    local appdata, localdata = os.getenv("APPDATA") or "", os.getenv("LOCALAPPDATA") or ""
    local venvs = { ".venvs\\stembridge", ".virtualenvs\\stembridge", "stembridge\\.venv", ".venv", "venv" }
    for _, venv in ipairs(venvs) do
      add(home .. "\\" .. venv .. "\\Scripts")
    end
    add(home .. "\\.local\\bin")  -- pipx
    for minor = 14, 9, -1 do
      add(appdata .. "\\Python\\Python3" .. minor .. "\\Scripts")
      add(localdata .. "\\Programs\\Python\\Python3" .. minor .. "\\Scripts")
    end
    return places
  end
  for _, venv in ipairs({ ".venvs/stembridge", ".virtualenvs/stembridge", "stembridge/.venv", ".venv", "venv",
                          ".local/pipx/venvs/stembridge", "miniconda3", "anaconda3", "miniforge3" }) do
    add(home .. "/" .. venv .. "/bin")
  end
  add(home .. "/.local/bin")
  if reaper.GetOS():match("OSX") or reaper.GetOS():match("macOS") then
    -- Reaper started from the Finder gets a bare PATH: Homebrew's and python.org's folders are not on it
    for minor = 14, 9, -1 do add(home .. "/Library/Python/3." .. minor .. "/bin") end
    add("/opt/homebrew/bin")
    add("/usr/local/bin")
    for minor = 14, 9, -1 do add("/Library/Frameworks/Python.framework/Versions/3." .. minor .. "/bin") end
  end
  return places
end

--- The stembridge command: the `executable` setting, else the first found on PATH or in common_places().
-- Returns the path, or nil and a message that says where it looked and how to fix it.
function request.find_executable()
  local configured = request.setting("executable")
  if configured then
    if request.is_file(configured) then return configured end
    return nil, ("The stembridge command set in the settings does not exist:\n%s\n\nFix the path, or clear it "
      .. "to look on PATH: run \"Stembridge: Status\" and answer Yes to edit the settings."):format(configured)
  end
  local dirs = {}
  for dir in (os.getenv("PATH") or ""):gmatch(IS_WINDOWS and "[^;]+" or "[^:]+") do dirs[#dirs + 1] = dir end
  for _, dir in ipairs(common_places()) do dirs[#dirs + 1] = dir end
  for _, dir in ipairs(dirs) do
    local path = dir:gsub("[/\\]$", "") .. SEP .. EXE_NAME
    if request.is_file(path) then return path end
  end
  return nil, ("Cannot find the stembridge command (%s) on PATH or in the usual virtualenv folders "
    .. "(~/.venvs/stembridge, ~/.local/bin, pipx, ...).\n\nInstall it (pip install stembridge), or tell the "
    .. "scripts where it is: run \"Stembridge: Status\" and answer Yes to edit the settings, then enter its "
    .. "full path (in a terminal, `which stembridge` or `where stembridge` prints it)."):format(EXE_NAME)
end

local function quote(arg)
  arg = tostring(arg)
  if IS_WINDOWS then
    return '"' .. arg:gsub('"', "'"):gsub("%%", "%%%%") .. '"'
  end
  return "'" .. arg:gsub("'", [['\'']]) .. "'"
end

--- Where the scripts' request files go. On macOS and Linux the path must not need quoting (ExecProcess gets it
-- bare, see request.start), so an odd TMPDIR falls back to /tmp.
function request.temp_dir()
  local base = IS_WINDOWS and (os.getenv("TEMP") or os.getenv("TMP")) or os.getenv("TMPDIR") or "/tmp"
  if not IS_WINDOWS and not base:match("^/[%w%./_%-]*$") then base = "/tmp" end
  local dir = base:gsub("[/\\]$", "") .. SEP .. "stembridge-reaper"
  reaper.RecursiveCreateDirectory(dir, 0)
  return dir
end

-- request ids stay taken for 30 days, and seeds should differ between runs: seed from the clocks once
math.randomseed(math.floor(reaper.time_precise() * 1000) ~ os.time() ~ math.floor(os.clock() * 1e6))

function request.new_id()
  return ("reaper-%06x%06x"):format(math.random(0, 0xFFFFFF), math.random(0, 0xFFFFFF))
end

--- The daemon options from the settings: --host, --port, --token, --state-dir.
local function daemon_args()
  local args = {}
  for _, key in ipairs({ "host", "port", "token", "state_dir" }) do
    local value = request.setting(key)
    if value then
      args[#args + 1] = "--" .. key:gsub("_", "-")
      args[#args + 1] = value
    end
  end
  return args
end

--- Starts `stembridge request <op> <args...>` without waiting. Returns a job to poll, or nil and a message.
-- `args` are the operation's own arguments; the daemon options, the request id and the result file are added.
function request.start(op, args)
  local exe, err = request.find_executable()
  if not exe then return nil, err end
  local id = request.new_id()
  local base = request.temp_dir() .. SEP .. id
  local job = {
    id = id, op = op, exe = exe, started = reaper.time_precise(),
    result = base .. ".json", progress = base .. ".json.progress", exit = base .. ".exit", log = base .. ".log",
    script = base .. (IS_WINDOWS and ".bat" or ".sh"),
  }
  local argv = { exe, "request", op }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  for _, a in ipairs(daemon_args()) do argv[#argv + 1] = a end
  for _, a in ipairs({ "--request-id", id, "--result-file", job.result, "-q" }) do argv[#argv + 1] = a end
  local words = {}
  for i, a in ipairs(argv) do words[i] = quote(a) end
  local command = table.concat(words, " ")
  local script, launcher
  if IS_WINDOWS then
    script = ("@echo off\r\n%s > %s 2>&1\r\necho %%ERRORLEVEL%% > %s\r\n"):format(
      command, quote(job.log), quote(job.exit))
    launcher = ('cmd.exe /C "%s"'):format(job.script)
  else
    local tmp_exit = job.exit .. ".tmp"
    script = ("%s > %s 2>&1\necho $? > %s && mv %s %s\n"):format(
      command, quote(job.log), quote(tmp_exit), quote(tmp_exit), quote(job.exit))
    launcher = "/bin/sh " .. job.script  -- no quotes: how ExecProcess splits a command line varies; see temp_dir
  end
  local ok, werr = write_file(job.script, script)
  if not ok then
    return nil, ("Cannot write to the temporary folder %s: %s"):format(request.temp_dir(), tostring(werr))
  end
  job.command = command
  reaper.ExecProcess(launcher, -2)  -- -2: do not wait (and start minimized on Windows)
  return job
end

--- The last complete progress line of a job: fraction (0..1) and stage, or nil while there is none.
function request.progress(job)
  local text = request.read_file(job.progress)
  if not text then return nil end
  local fraction, stage
  for line in text:gmatch("([^\n]*)\n") do
    local f, s = line:match("^(%S+) ?(.*)$")
    if tonumber(f) then fraction, stage = tonumber(f), s end
  end
  return fraction, stage
end

local function cleanup(job)
  for _, path in ipairs({ job.result, job.progress, job.exit, job.log, job.script, job.exit .. ".tmp" }) do
    os.remove(path)
  end
end

local function error_result(job, code, message)
  return { request_id = job.id, status = "error", error = { code = code, message = message } }
end

--- Polls a job: nil while it runs, else its result, {status = "done", outputs = ..., paths = ...} or
-- {status = "error", error = {code = ..., message = ...}}. Files are removed once the result is read.
function request.poll(job)
  local now = reaper.time_precise()
  local text = request.read_file(job.result)
  local exit_text = request.read_file(job.exit)
  if exit_text and not exit_text:find("%d") then exit_text = nil end  -- Windows writes it in place: not done yet
  if text and not exit_text then
    job.result_seen = job.result_seen or now
    if now - job.result_seen < request.EXIT_GRACE then return nil end  -- F.exit follows within milliseconds
  end
  local result
  if text then
    local ok, value = pcall(json.decode, text)
    result = ok and type(value) == "table" and value
      or error_result(job, "bad_result", ("cannot read %s: %s"):format(job.result, tostring(value)))
  elseif exit_text then
    local code = tonumber(exit_text:match("%-?%d+"))
    local log = (request.read_file(job.log) or ""):gsub("%s+$", "")
    if #log > 1500 then log = "..." .. log:sub(-1500) end
    local what = (code == 127 or code == 9009) and "could not be started (not found or not executable)"
      or ("stopped with exit code %s before it reached the daemon"):format(tostring(code))
    result = error_result(job, "not_started", ("The stembridge command %s:\n%s\n\n%s"):format(
      what, job.exe, log ~= "" and log or "(it printed nothing)"))
  elseif not request.read_file(job.progress) and now - job.started > request.START_TIMEOUT then
    result = error_result(job, "not_started", ("The stembridge command did not start within %d s:\n%s"):format(
      request.START_TIMEOUT, job.command))
  else
    return nil
  end
  cleanup(job)
  return result
end

--- Asks the daemon to cancel a job: a request of its own, started without waiting; poll it to remove its files.
function request.cancel(job)
  return request.start("cancel", { job.id })
end

--- A message for the user about a failed request, or nil when there is nothing to say (cancelled).
function request.describe_error(result)
  local err = type(result.error) == "table" and result.error or {}
  local code, message = tostring(err.code or "error"), tostring(err.message or "unknown error")
  if code == "cancelled" then return nil end
  if code == "unreachable" then
    return ("The stembridge daemon is not running, or does not answer:\n%s\n\nStart it in a terminal with\n"
      .. "    stembridge serve\nand run this action again."):format(message)
  end
  if code == "not_started" then return message end
  return ("stembridge could not do it (%s):\n%s"):format(code, message)
end

return request
