-- End-to-end test of llama.vim (ggml-org's Vim/Neovim plugin for llama.cpp's server), unchanged,
-- in a real (headless) Neovim against a real `lmrs serve` answering its `POST /infill`.
--
--   LMRS_SERVE_URL=http://127.0.0.1:PORT nvim --headless -u NONE -i NONE \
--     --cmd 'set rtp^=PATH/TO/llama.vim' -c 'filetype on' -c 'luafile editors/nvim/test/llama_vim.lua'
--
-- (editors/nvim/test/llama_vim.sh starts the server and runs this.) The plugin is configured only
-- with its endpoint. Opens a Python file, types a new line in insert mode through the typeahead as
-- a user would (llama.vim asks for a completion on each cursor move in insert mode), waits for its
-- ghost text (extmarks in its `vt_fim` namespace), accepts it with <Tab> (the plugin's default
-- accept key) and checks that the buffer holds exactly what was shown. Exits 0 on success, 1 on
-- failure with the reason on stderr.

local api = vim.api
local TIMEOUT_MS = tonumber(os.getenv('LMRS_TEST_TIMEOUT_MS') or '') or 120000
local GHOST_TEXT_WAIT_MS = 60000

local function log(msg) io.stderr:write('[llama-vim] ' .. msg .. '\n') end

-- llama.vim keeps each raw /infill answer it took (by context hash, so one answer may be there
-- several times). Returns them decoded (nil for one that is not a JSON object).
local function answers()
  local seen, list = {}, {}
  for _, raw in pairs(vim.g.cache_data or {}) do
    if not seen[raw] then
      seen[raw] = true
      local ok, answer = pcall(vim.json.decode, raw)
      table.insert(list, { raw = raw, answer = ok and type(answer) == 'table' and answer or nil })
    end
  end
  return list
end

-- Their text, fields and the server's timings. llama.vim asks for its fields by path
-- (`response_fields`) and reads the timings it shows from flat keys such as `timings/prompt_n`.
local function log_answers()
  for _, entry in ipairs(answers()) do
    local answer = entry.answer
    if answer then
      local keys = vim.tbl_keys(answer)
      table.sort(keys)
      log(('/infill answer: %q (prompt %s tokens in %s ms, predicted %s tokens in %s ms; fields %s)'):format(
        tostring(answer.content), tostring(answer['timings/prompt_n']), tostring(answer['timings/prompt_ms']),
        tostring(answer['timings/predicted_n']), tostring(answer['timings/predicted_ms']), table.concat(keys, ' ')))
    else
      log('/infill answer (not a JSON object): ' .. entry.raw)
    end
  end
end

local function finish(ok, msg)
  log_answers()
  log((ok and 'PASS' or 'FAIL') .. (msg and (': ' .. msg) or ''))
  if not ok then
    local messages = vim.fn.execute('messages')
    if messages ~= '' then log('Neovim messages:' .. messages) end
  end
  vim.cmd(ok and 'qall!' or 'cquit 1')
end

-- Hard deadline for the whole test.
vim.defer_fn(function() finish(false, 'timed out after ' .. TIMEOUT_MS .. ' ms') end, TIMEOUT_MS)

local driver = dofile(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':h') .. '/driver.lua')
local sleep, wait_until, feed = driver.sleep, driver.wait_until, driver.feed
local function type_text(s) driver.type_text(s, 20) end
-- llama#is_fim_hint_shown() returns v:true/v:false (a Lua boolean here).
local function hint_shown()
  local shown = vim.fn['llama#is_fim_hint_shown']()
  return shown == true or shown == 1
end
local function buffer_lines() return api.nvim_buf_get_lines(0, 0, -1, false) end

-- llama.vim's ghost text: the first line is virtual text (highlight llama_hl_fim_hint, followed by
-- an info chunk) at the cursor, the other lines are virtual lines below it. Returns the suggestion's
-- lines, the info text and the first mark's position, or nil while nothing is shown.
local function ghost_text()
  local ns = api.nvim_create_namespace('vt_fim')
  local marks = api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
  local first, rest, info, at = nil, {}, '', nil
  for _, mark in ipairs(marks) do
    local details = mark[4]
    if details.virt_text then
      first = ''
      at = { mark[2], mark[3] }
      for _, chunk in ipairs(details.virt_text) do
        if chunk[2] == 'llama_hl_fim_hint' then first = first .. chunk[1] else info = info .. chunk[1] end
      end
    end
    for _, line in ipairs(details.virt_lines or {}) do
      local text = ''
      for _, chunk in ipairs(line) do text = text .. chunk[1] end
      table.insert(rest, text)
    end
  end
  if first == nil then return nil end
  return { first, unpack(rest) }, info, at
end

local function main()
  local url = assert(os.getenv('LMRS_SERVE_URL'), 'LMRS_SERVE_URL not set')
  -- The only setting a user changes to point llama.vim at another server.
  vim.g.llama_config = { endpoint_fim = url .. '/infill' }
  vim.cmd('runtime plugin/llama.vim')
  assert(vim.fn.exists('*llama#fim') == 1, 'llama.vim did not load: is it on the runtimepath?')
  assert(vim.fn.exists(':LlamaEnable') == 2, 'llama.vim did not define its commands')

  local dir = vim.fn.tempname()
  vim.fn.mkdir(dir, 'p')
  local file = dir .. '/fib.py'
  vim.fn.writefile({
    'def fibonacci(n):',
    '    """Return the n-th Fibonacci number."""',
  }, file)
  vim.cmd('edit ' .. vim.fn.fnameescape(file))
  assert(vim.bo.filetype == 'python', 'filetype detection: got ' .. vim.bo.filetype)

  -- Type a new line in insert mode: "    if n" (indent typed by hand, so no autoindent).
  vim.bo.autoindent = false
  vim.o.showmode = false -- no "-- INSERT --" written into the log lines
  vim.cmd('normal! G$')
  feed('o')
  sleep(50)
  local typed = '    if n'
  type_text(typed)
  assert(api.nvim_get_mode().mode == 'i', 'not in insert mode: ' .. api.nvim_get_mode().mode)
  assert(api.nvim_get_current_line() == typed, 'typed line is ' .. api.nvim_get_current_line())

  wait_until('llama.vim to show ghost text', function()
    local lines = ghost_text()
    return lines ~= nil and table.concat(lines, '\n'):match('%S') ~= nil
      and hint_shown()
  end, GHOST_TEXT_WAIT_MS)
  local suggestion, info, at = ghost_text()
  log(('ghost text: %q'):format(table.concat(suggestion, '\n')))
  log(('info: %q'):format(vim.trim(info)))
  -- The answers carry the timings llama.vim shows, under the paths it asked for.
  for _, entry in ipairs(answers()) do
    assert(entry.answer and entry.answer['timings/predicted_n'] ~= nil and entry.answer['timings/prompt_ms'] ~= nil,
      'an /infill answer lacks the response_fields llama.vim asked for (timings/...): ' .. entry.raw)
  end
  local cursor = api.nvim_win_get_cursor(0)
  assert(at[1] == cursor[1] - 1 and at[2] == #typed,
    ('ghost text at %d:%d, cursor at %d:%d'):format(at[1], at[2], cursor[1] - 1, cursor[2]))

  -- What accepting must give: the typed line completed by the first line, the rest below it.
  local before = buffer_lines()
  local row = cursor[1]
  local expected = {}
  for i = 1, row - 1 do table.insert(expected, before[i]) end
  table.insert(expected, typed .. suggestion[1])
  for i = 2, #suggestion do table.insert(expected, suggestion[i]) end
  for i = row + 1, #before do table.insert(expected, before[i]) end

  feed('<Tab>')
  wait_until('<Tab> to accept', function()
    return table.concat(buffer_lines(), '\n') ~= table.concat(before, '\n')
  end, 5000)
  sleep(100)
  local got = table.concat(buffer_lines(), '\n')
  local want = table.concat(expected, '\n')
  assert(got == want, ('buffer after <Tab>:\n%s\nexpected:\n%s'):format(got, want))
  assert(not got:find('\t'), 'a literal tab was inserted instead of accepting')
  log('buffer after <Tab>:\n' .. got)

  -- The cursor ends after the accepted text, still in insert mode.
  local last = expected[row + #suggestion - 1]
  local c = api.nvim_win_get_cursor(0)
  assert(c[1] == row + #suggestion - 1 and c[2] == #last,
    ('cursor at %d:%d after <Tab>, expected %d:%d'):format(c[1], c[2], row + #suggestion - 1, #last))
  assert(api.nvim_get_mode().mode == 'i', 'left insert mode: ' .. api.nvim_get_mode().mode)
  finish(true, ('accepted %q'):format(table.concat(suggestion, '\n')))
end

driver.run(main, finish)
