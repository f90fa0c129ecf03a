-- End-to-end test of lmrs.nvim in a real (headless) Neovim against the real `lmrs lsp`.
--
--   LMRS_BIN=... LMRS_MODEL=... nvim --headless -u NONE -i NONE \
--     --cmd 'set rtp^=editors/nvim' -c 'filetype on' -c 'luafile editors/nvim/test/e2e.lua'
--
-- Opens a Python file, types in insert mode (through the typeahead, as a user would), waits for the
-- ghost-text extmark, accepts one word with the accept-word key and the rest with <Tab>, and checks
-- the buffer. Exits 0 on success, 1 on failure (with the reason on stderr).

local api = vim.api
local TIMEOUT_MS = tonumber(os.getenv('LMRS_TEST_TIMEOUT_MS') or '') or 150000

local function log(msg) io.stderr:write('[nvim-e2e] ' .. msg .. '\n') end

local function finish(ok, msg)
  log((ok and 'PASS' or 'FAIL') .. (msg and (': ' .. msg) or ''))
  if not ok then
    local lp = vim.lsp.get_log_path()
    log('LSP log (tail): ' .. lp)
    local f = io.open(lp, 'r')
    if f then
      local all = f:read('*a'); f:close()
      io.stderr:write(all:sub(-3000) .. '\n')
    end
  end
  vim.cmd(ok and 'qall!' or 'cquit 1')
end

-- Hard deadline for the whole test.
vim.defer_fn(function() finish(false, 'timed out after ' .. TIMEOUT_MS .. ' ms') end, TIMEOUT_MS)

local driver = dofile(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':h') .. '/driver.lua')
local sleep, wait_until, feed = driver.sleep, driver.wait_until, driver.feed
local function type_text(s) driver.type_text(s, 15) end
local function buffer_text() return table.concat(api.nvim_buf_get_lines(0, 0, -1, false), '\n') end
local function cursor_offset()
  local c = api.nvim_win_get_cursor(0)
  local lines = api.nvim_buf_get_lines(0, 0, c[1] - 1, false)
  local off = 0
  for _, l in ipairs(lines) do off = off + #l + 1 end
  return off + c[2]
end

local function main()
  local bin = assert(os.getenv('LMRS_BIN'), 'LMRS_BIN not set')
  local model = assert(os.getenv('LMRS_MODEL'), 'LMRS_MODEL not set')
  local lmrs = require('lmrs')
  lmrs.setup({ server_path = bin, model_path = model, threads = 2, builtin = false,
    init_options = { maxTokens = 24, timeoutMs = 60000 } })

  local dir = vim.fn.tempname()
  vim.fn.mkdir(dir, 'p')
  local file = dir .. '/numbers.py'
  vim.fn.writefile({
    'def add(a, b):',
    '    """Return the sum of a and b."""',
    '    return a + b',
    '',
    '',
    'def is_even(n):',
    '    """Return True when n is even."""',
  }, file)
  vim.cmd('edit ' .. vim.fn.fnameescape(file))
  assert(vim.bo.filetype == 'python', 'filetype detection: got ' .. vim.bo.filetype)

  wait_until('the client to start', function() return lmrs.client_id() ~= nil end, 10000)
  wait_until('the model to load', function()
    local s = lmrs.status()
    if s == 'error' then error('server reported an error: ' .. select(2, lmrs.status())) end
    return s == 'ready'
  end, 60000)
  log('model ready: ' .. select(2, lmrs.status()))

  -- Type a new line in insert mode: "    return" (indent typed by hand, so no autoindent).
  vim.bo.autoindent = false
  vim.cmd('normal! G$')
  feed('o')
  sleep(50)
  type_text('    return')
  wait_until('ghost text', function() return lmrs.visible() end, 90000)

  local suggestion = lmrs.current()
  local marks = api.nvim_buf_get_extmarks(0, api.nvim_create_namespace('lmrs_ghost_text'), 0, -1,
    { details = true })
  assert(#marks == 1, 'expected one ghost-text extmark, got ' .. #marks)
  local shown = ''
  for _, chunk in ipairs(marks[1][4].virt_text or {}) do
    if chunk[2] == 'LmrsGhostText' then shown = shown .. chunk[1] end
  end
  local first_line = vim.split(suggestion, '\n', { plain = true })[1]
  assert(shown:sub(1, #first_line) == first_line,
    ('extmark shows %q, suggestion starts %q'):format(shown, first_line))
  log(('ghost text: %q'):format(suggestion))
  local row, col = marks[1][2], marks[1][3]
  local c = api.nvim_win_get_cursor(0)
  assert(row == c[1] - 1 and col == c[2], 'extmark is not at the cursor')

  local before, off = buffer_text(), cursor_offset()
  local expected = before:sub(1, off) .. suggestion .. before:sub(off + 1)

  -- Accept one word, then the rest with <Tab>.
  local word_end = select(2, suggestion:find('^%s*[%w_]+')) or select(2, suggestion:find('^%s*[^%w_%s]'))
  feed('<M-w>')
  wait_until('accept-word', function() return buffer_text() ~= before end, 5000)
  local after_word = before:sub(1, off) .. suggestion:sub(1, word_end) .. before:sub(off + 1)
  assert(buffer_text() == after_word, ('after accept-word: %q, expected %q'):format(buffer_text(), after_word))
  if word_end < #suggestion then
    assert(lmrs.current() == suggestion:sub(word_end + 1),
      ('remaining ghost text %q'):format(tostring(lmrs.current())))
    feed('<Tab>')
    wait_until('accept', function() return buffer_text() ~= after_word end, 5000)
  end
  local got = buffer_text()
  assert(got == expected, ('buffer after accept:\n%s\nexpected:\n%s'):format(got, expected))
  assert(got:find('def is_even(n):\n    """Return True when n is even."""\n    return', 1, true) ~= nil, 'typed text lost:\n' .. got)
  local c2 = api.nvim_win_get_cursor(0)
  local off2 = cursor_offset()
  assert(off2 == off + #suggestion, ('cursor at %d:%d, expected after the suggestion'):format(c2[1], c2[2]))

  -- Dismiss: <Esc> leaves insert mode and no ghost text stays behind.
  feed('<Esc>')
  wait_until('dismiss on InsertLeave', function() return not lmrs.visible() end, 5000)
  finish(true, ('inserted %q'):format(suggestion))
end

driver.run(main, finish)
