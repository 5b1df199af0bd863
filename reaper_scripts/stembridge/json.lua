-- @noindex
-- A small JSON decoder for the result files `stembridge request --result-file F` writes.
-- Objects become tables with string keys, arrays become sequences, null becomes json.null.

local json = {}

json.null = setmetatable({}, { __tostring = function() return "null" end })

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function fail(text, pos, what)
  error(("bad JSON at character %d: %s"):format(pos, what), 0)
end

local function skip(text, pos)
  return text:find("[^ \t\r\n]", pos) or #text + 1
end

local function utf8_char(code)
  if utf8 and utf8.char then return utf8.char(code) end
  return code < 128 and string.char(code) or "?"
end

local decode_value

local function decode_string(text, pos)
  local parts, i = {}, pos + 1
  while true do
    local j = text:find('["\\]', i)
    if not j then fail(text, pos, "unterminated string") end
    parts[#parts + 1] = text:sub(i, j - 1)
    if text:sub(j, j) == '"' then return table.concat(parts), j + 1 end
    local esc = text:sub(j + 1, j + 1)
    if esc == "u" then
      local hex = text:sub(j + 2, j + 5)
      local code = tonumber(hex, 16)
      if not code or #hex ~= 4 then fail(text, j, "bad \\u escape") end
      i = j + 6
      if code >= 0xD800 and code <= 0xDBFF and text:sub(i, i + 1) == "\\u" then
        local low = tonumber(text:sub(i + 2, i + 5), 16)
        if low and low >= 0xDC00 and low <= 0xDFFF then
          code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
          i = i + 6
        end
      end
      parts[#parts + 1] = utf8_char(code)
    elseif ESCAPES[esc] then
      parts[#parts + 1] = ESCAPES[esc]
      i = j + 2
    else
      fail(text, j, "bad escape \\" .. esc)
    end
  end
end

local function decode_list(text, pos, close, item)
  local pos2 = skip(text, pos + 1)
  if text:sub(pos2, pos2) == close then return pos2 + 1 end
  while true do
    pos2 = item(skip(text, pos2))
    pos2 = skip(text, pos2)
    local c = text:sub(pos2, pos2)
    if c == close then return pos2 + 1 end
    if c ~= "," then fail(text, pos2, "expected ',' or '" .. close .. "'") end
    pos2 = pos2 + 1
  end
end

decode_value = function(text, pos)
  pos = skip(text, pos)
  local c = text:sub(pos, pos)
  if c == "{" then
    local obj = {}
    local after = decode_list(text, pos, "}", function(p)
      if text:sub(p, p) ~= '"' then fail(text, p, "expected a key") end
      local key, p2 = decode_string(text, p)
      p2 = skip(text, p2)
      if text:sub(p2, p2) ~= ":" then fail(text, p2, "expected ':'") end
      local value, p3 = decode_value(text, p2 + 1)
      obj[key] = value
      return p3
    end)
    return obj, after
  elseif c == "[" then
    local arr = {}
    local after = decode_list(text, pos, "]", function(p)
      local value, p2 = decode_value(text, p)
      arr[#arr + 1] = value
      return p2
    end)
    return arr, after
  elseif c == '"' then
    return decode_string(text, pos)
  end
  for word, value in pairs({ ["true"] = true, ["false"] = false, ["null"] = json.null }) do
    if text:sub(pos, pos + #word - 1) == word then return value, pos + #word end
  end
  local number = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if number and number ~= "" and tonumber(number) then return tonumber(number), pos + #number end
  fail(text, pos, "unexpected " .. (c == "" and "end of text" or ("'" .. c .. "'")))
end

--- Decodes one JSON document; raises an error naming the position of the first problem.
function json.decode(text)
  local value, pos = decode_value(text, 1)
  pos = skip(text, pos)
  if pos <= #text then fail(text, pos, "text after the value") end
  return value
end

return json
