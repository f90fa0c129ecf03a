-- lmrs.nvim: inline code completions (ghost text) from the lmrs language server.
--
-- A thin client: the server builds prompts, runs the model, caches and cancels. This file starts
-- `lmrs lsp` through vim.lsp, asks for `textDocument/inlineCompletion` while you type, draws the
-- answer with extmarks and inserts it on accept.
--
-- Works on Neovim 0.7 (Debian bookworm) and later. On Neovim >= 0.12, which has
-- vim.lsp.inline_completion built in, that is used for display and accept instead of our own
-- renderer (set `builtin = false` to keep ours, e.g. for accept-word / accept-line).

local M = {}

local api = vim.api
local uv = vim.loop

local defaults = {
  -- Server command; `server_path` is used when `cmd` is nil. nil: `lmrs` on PATH, else
  -- ~/.cargo/bin/lmrs (where `cargo install` puts it, often not on PATH).
  server_path = nil,
  cmd = nil,
  -- initializationOptions (camelCase keys of the server's configuration).
  model_path = nil, -- GGUF model; nil = the server's default location
  threads = nil,
  init_options = {}, -- any other server option, e.g. { maxTokens = 48 }
  -- Per-filetype switch: { markdown = false }. Filetypes listed false get no suggestions;
  -- `filetypes`, when set, is an allow-list.
  languages = {},
  filetypes = nil,
  -- Request suggestions automatically while typing (otherwise only via :LmrsSuggest / trigger key).
  auto_trigger = true,
  debounce_ms = 120,
  -- Use vim.lsp.inline_completion on Neovim >= 0.12 ("auto"), always (true) or never (false).
  builtin = 'auto',
  hl_group = 'LmrsGhostText',
  keymaps = {
    accept = '<Tab>', -- falls back to a normal <Tab> when no suggestion is shown
    accept_word = '<M-w>',
    accept_line = '<M-l>',
    dismiss = '<C-]>',
    next = '<M-]>',
    prev = '<M-[>',
    trigger = '<M-\\>',
  },
}

M.config = vim.deepcopy(defaults)

local ns = api.nvim_create_namespace('lmrs_ghost_text')
local has = function(feature) return vim.fn.has(feature) == 1 end

-- Server state for the status line: off | loading | ready | busy | error.
local state = { status = 'off', message = '', client_id = nil, enabled = true }
-- The suggestion on screen (at most one, in one buffer).
local ghost = nil -- { buf, row, col, items = {...}, index, extmark }
local pending = nil -- { buf, request_id, tick }
local timer = nil
local seq = 0

---------------------------------------------------------------------------------------------------
-- Small compatibility helpers (0.7 .. 0.12 changed several signatures)

local function use_builtin()
  if M.config.builtin == false then return false end
  local ok = vim.lsp.inline_completion ~= nil and vim.lsp.inline_completion.enable ~= nil
  if M.config.builtin == true then return ok end
  return ok and has('nvim-0.12')
end

local function get_client()
  if not state.client_id then return nil end
  return vim.lsp.get_client_by_id(state.client_id)
end

-- client.request became a method (client:request) in 0.11; the dot form warns there.
local function client_request(client, method, params, handler, bufnr)
  if has('nvim-0.11') then return client:request(method, params, handler, bufnr) end
  return client.request(method, params, handler, bufnr)
end

local function client_cancel(client, id)
  if has('nvim-0.11') then return client:cancel_request(id) end
  return client.cancel_request(id)
end

local function client_notify(client, method, params)
  if has('nvim-0.11') then return client:notify(method, params) end
  return client.notify(method, params)
end

-- Byte column <-> LSP character index in the client's position encoding.
local function byte_to_char(line, col, encoding)
  if encoding == 'utf-8' then return col end
  if has('nvim-0.11') then return vim.str_utfindex(line, encoding, col, false) end
  local utf32, utf16 = vim.str_utfindex(line, col)
  return encoding == 'utf-32' and utf32 or utf16
end

local function char_to_byte(line, index, encoding)
  if encoding == 'utf-8' then return math.min(index, #line) end
  if has('nvim-0.11') then return vim.str_byteindex(line, encoding, index, false) end
  local ok, b = pcall(vim.str_byteindex, line, index, encoding ~= 'utf-32')
  return ok and b or #line
end

local function set_status(s, message)
  state.status = s
  state.message = message or ''
  vim.cmd('redrawstatus')
  pcall(api.nvim_exec_autocmds, 'User', { pattern = 'LmrsStatus', modeline = false })
end

local function filetype_enabled(buf)
  local ft = vim.bo[buf].filetype
  if ft == '' or vim.bo[buf].buftype ~= '' then return false end
  if M.config.languages[ft] == false then return false end
  if M.config.filetypes then return vim.tbl_contains(M.config.filetypes, ft) end
  return true
end

---------------------------------------------------------------------------------------------------
-- Ghost text

function M.clear()
  if ghost and api.nvim_buf_is_valid(ghost.buf) then
    api.nvim_buf_clear_namespace(ghost.buf, ns, 0, -1)
  end
  ghost = nil
end

local function render()
  local g = ghost
  if not g then return end
  api.nvim_buf_clear_namespace(g.buf, ns, 0, -1)
  local text = g.items[g.index]
  local lines = vim.split(text, '\n', { plain = true })
  local line = api.nvim_buf_get_lines(g.buf, g.row, g.row + 1, false)[1] or ''
  local rest = line:sub(g.col + 1) -- text right of the cursor; ends up after the suggestion
  local hl = M.config.hl_group
  local first = lines[1]
  if #g.items > 1 then first = first .. (' (%d/%d)'):format(g.index, #g.items) end
  local opts = { hl_mode = 'combine' }
  if has('nvim-0.10') then
    -- Inline virtual text shifts the rest of the line right, exactly like the inserted text will.
    opts.virt_text = { { first, hl } }
    opts.virt_text_pos = 'inline'
  else
    -- Neovim < 0.10 has no inline virtual text: overlay the suggestion followed by the real rest of
    -- the line (redrawn in Normal), which looks the same as long as the overlay covers the line.
    if #lines == 1 then
      opts.virt_text = { { first, hl }, { rest, 'Normal' } }
    else
      opts.virt_text = { { first .. string.rep(' ', vim.fn.strdisplaywidth(rest)), hl } }
    end
    opts.virt_text_pos = 'overlay'
  end
  if #lines > 1 then
    local vl = {}
    for i = 2, #lines do
      local chunks = { { lines[i], hl } }
      if i == #lines and rest ~= '' then table.insert(chunks, { rest, 'Normal' }) end
      table.insert(vl, chunks)
    end
    opts.virt_lines = vl
  end
  g.extmark = api.nvim_buf_set_extmark(g.buf, ns, g.row, g.col, opts)
end

local function show(buf, row, col, items)
  M.clear()
  if #items == 0 then return end
  local line = api.nvim_buf_get_lines(buf, row, row + 1, false)[1] or ''
  ghost = { buf = buf, row = row, col = col, items = items, index = 1, prefix = line:sub(1, col),
    tick = api.nvim_buf_get_changedtick(buf) }
  render()
end

--- The suggestion on screen, or nil.
function M.current()
  if ghost then return ghost.items[ghost.index] end
  return nil
end

--- Whether ghost text is visible.
function M.visible()
  return ghost ~= nil
end

---------------------------------------------------------------------------------------------------
-- Requests

local function cancel_pending()
  if pending then
    local client = get_client()
    if client and pending.request_id then pcall(client_cancel, client, pending.request_id) end
    pending = nil
    if state.status == 'busy' then set_status('ready') end
  end
end

--- Ask the server for suggestions at the cursor. `invoked` = explicitly requested (the server then
--- also returns alternatives to cycle through).
function M.request(invoked)
  local buf = api.nvim_get_current_buf()
  local client = get_client()
  if not client or not state.enabled or not filetype_enabled(buf) then return end
  if not vim.lsp.buf_is_attached(buf, client.id) then return end
  cancel_pending()
  local cursor = api.nvim_win_get_cursor(0)
  local row, col = cursor[1] - 1, cursor[2]
  local line = api.nvim_buf_get_lines(buf, row, row + 1, false)[1] or ''
  local enc = client.offset_encoding or 'utf-16'
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(buf) },
    position = { line = row, character = byte_to_char(line, col, enc) },
    context = { triggerKind = invoked and 1 or 2 },
  }
  seq = seq + 1
  local my_seq = seq
  local tick = api.nvim_buf_get_changedtick(buf)
  set_status('busy')
  -- client.request flushes pending didChange notifications before sending, so the server sees the
  -- text we see.
  local ok, id = client_request(client, 'textDocument/inlineCompletion', params, function(err, result)
    if my_seq ~= seq then return end -- superseded
    pending = nil
    if state.status == 'busy' then set_status('ready') end
    if err or not result then return end
    -- Stale: the user typed or moved since we asked.
    if not api.nvim_buf_is_valid(buf) or api.nvim_get_current_buf() ~= buf then return end
    if api.nvim_buf_get_changedtick(buf) ~= tick then return end
    local now = api.nvim_win_get_cursor(0)
    if now[1] - 1 ~= row or now[2] ~= col then return end
    if not api.nvim_get_mode().mode:match('^i') then return end
    local items = {}
    for _, item in ipairs(result.items or result) do
      local text = item.insertText
      if type(text) == 'table' then text = text.value end -- StringValue (snippet); plain here
      -- Items are anchored at the cursor (range = cursor..cursor); honour a range that starts
      -- earlier by dropping the part that is already typed.
      if item.range and item.range.start then
        local s = item.range.start
        if s.line == row then
          local sc = char_to_byte(line, s.character, enc)
          if sc < col then
            local typed = line:sub(sc + 1, col)
            if text:sub(1, #typed) == typed then text = text:sub(#typed + 1) else text = nil end
          end
        end
      end
      if text and text ~= '' then table.insert(items, text) end
    end
    show(buf, row, col, items)
  end, buf)
  if ok then pending = { buf = buf, request_id = id } else set_status('ready') end
end

local function schedule_request()
  if not M.config.auto_trigger then return end
  if not timer then timer = uv.new_timer() end
  timer:stop()
  timer:start(M.config.debounce_ms, 0, vim.schedule_wrap(function()
    if api.nvim_get_mode().mode:match('^i') then M.request(false) end
  end))
end

---------------------------------------------------------------------------------------------------
-- Accept / dismiss / cycle

-- Inserts `text` at the ghost anchor and moves the cursor after it.
local function insert(text)
  local g = ghost
  local lines = vim.split(text, '\n', { plain = true })
  api.nvim_buf_set_text(g.buf, g.row, g.col, g.row, g.col, lines)
  local end_row = g.row + #lines - 1
  local end_col = (#lines == 1 and g.col or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { end_row + 1, end_col })
  return end_row, end_col
end

-- Accepts the first `n` bytes of the suggestion; the rest stays on screen as the new suggestion.
local function accept_part(n)
  if not ghost then return false end
  local text = ghost.items[ghost.index]
  local part, rest = text:sub(1, n), text:sub(n + 1)
  local buf = ghost.buf
  local row, col = insert(part)
  if rest == '' then
    M.clear() -- TextChangedI follows and asks for the next suggestion
  else
    -- Keep the rest on screen. `tick` marks the buffer state it belongs to, so the TextChangedI
    -- that our own insert causes is not mistaken for typing.
    show(buf, row, col, { rest })
  end
  return true
end

--- Accept the whole suggestion. Returns false when none is shown.
function M.accept()
  if not ghost then return false end
  return accept_part(#ghost.items[ghost.index])
end

--- Accept up to the end of the next word (leading blanks included).
function M.accept_word()
  if not ghost then return false end
  local text = ghost.items[ghost.index]
  local _, e = text:find('^%s*[%w_]+')
  if not e then _, e = text:find('^%s*[^%w_%s]') end
  return accept_part(e or #text)
end

--- Accept up to the end of the current line (or the next line when the suggestion starts with one).
function M.accept_line()
  if not ghost then return false end
  local text = ghost.items[ghost.index]
  local nl = text:find('\n', 2, true)
  return accept_part(nl and nl - 1 or #text)
end

--- Hide the suggestion (and cancel a request in flight).
function M.dismiss()
  cancel_pending()
  local had = ghost ~= nil
  M.clear()
  return had
end

--- Show the next (or previous, with -1) alternative, asking the server for alternatives first when
--- only one suggestion is known.
function M.cycle(step)
  if use_builtin() then
    if vim.lsp.inline_completion.select then vim.lsp.inline_completion.select({ count = step }) end
    return
  end
  if not ghost or #ghost.items < 2 then return M.request(true) end
  ghost.index = (ghost.index - 1 + step) % #ghost.items + 1
  render()
end

-- TextChangedI: if the user typed exactly what the suggestion says, shrink it instead of asking
-- again ("typing through"); otherwise drop it and ask after the debounce.
local function on_text_changed()
  local buf = api.nvim_get_current_buf()
  if ghost and ghost.buf == buf and ghost.tick == api.nvim_buf_get_changedtick(buf) then
    return -- our own edit (partial accept); the ghost already matches the text
  end
  if ghost and ghost.buf == buf then
    local cursor = api.nvim_win_get_cursor(0)
    local row, col = cursor[1] - 1, cursor[2]
    local line = api.nvim_buf_get_lines(buf, row, row + 1, false)[1] or ''
    if row == ghost.row and col > ghost.col and line:sub(1, ghost.col) == ghost.prefix then
      local typed = line:sub(ghost.col + 1, col)
      local text = ghost.items[ghost.index]
      if text:sub(1, #typed) == typed and #typed < #text then
        show(buf, row, col, { text:sub(#typed + 1) })
        return
      end
    end
  end
  M.clear()
  schedule_request()
end

---------------------------------------------------------------------------------------------------
-- Server lifecycle

local function init_options()
  local o = vim.deepcopy(M.config.init_options or {})
  if M.config.model_path then o.modelPath = vim.fn.expand(M.config.model_path) end
  if M.config.threads then o.threads = M.config.threads end
  if next(M.config.languages) then o.languages = M.config.languages end
  return o
end

local function on_progress(err, result, ctx, config)
  -- The model's tokens only: loading it (lmrs/load/N) or downloading it (lmrs/pull/N, autoPull);
  -- the workspace index's progress (lmrs/index) says nothing about the model.
  local token = result and type(result.token) == 'string' and result.token or ''
  if result and result.value and (token:match('^lmrs/load/') or token:match('^lmrs/pull/')) then
    local v = result.value
    local pct = v.percentage and (' (' .. v.percentage .. '%)') or ''
    if v.kind == 'begin' then
      set_status('loading', (v.title or '') .. ': ' .. (v.message or '') .. pct)
    elseif v.kind == 'report' then
      set_status('loading', (v.message or state.message) .. pct)
    elseif v.kind == 'end' then
      -- The server ends the load with "lmrs: model ready (...)" or with the error, and a download
      -- with "lmrs: NAME downloaded" (the load follows) or with the error.
      local msg = v.message or ''
      local status = msg:find('ready', 1, true) and 'ready' or (msg:match('downloaded$') and 'loading' or 'error')
      set_status(status, msg)
    end
  end
  local default = vim.lsp.handlers['$/progress']
  if default then return default(err, result, ctx, config) end
end

local function on_show_message(err, result, ctx, config)
  if result and result.type == 1 then set_status('error', result.message) end
  return vim.lsp.handlers['window/showMessage'](err, result, ctx, config)
end

-- How to install the server, for the message when it is missing.
M.install_hint = '`cargo install --locked --path server` in a checkout of lmrs '
  .. '(or `cargo install --locked --git <lmrs repository URL> lmrs-lsp`)'

--- The server executable: `server_path` when set (`~` expanded; the only candidate then), else
--- `lmrs` on PATH, else ~/.cargo/bin/lmrs. Returns the path, or nil and what to tell the user.
function M.find_server()
  local configured = M.config.server_path
  if configured and configured ~= '' then
    local path = vim.fn.expand(configured)
    if vim.fn.executable(path) == 1 then return path end
    return nil, ('lmrs: server_path %q is not an executable; fix it, or leave it unset to use lmrs '
      .. 'from PATH or ~/.cargo/bin'):format(configured)
  end
  if vim.fn.executable('lmrs') == 1 then return vim.fn.exepath('lmrs') end
  local home = uv.os_homedir() or os.getenv('HOME') or ''
  local cargo = home .. '/.cargo/bin/lmrs'
  if vim.fn.executable(cargo) == 1 then return cargo end
  return nil, 'lmrs: the server binary was not found (not on PATH, not in ~/.cargo/bin). Install it with '
    .. M.install_hint .. ', or set server_path in require("lmrs").setup{}.'
end

local function client_config()
  local cmd = M.config.cmd
  if not cmd then
    local path, why = M.find_server()
    if not path then
      if not state.missing_notified then
        state.missing_notified = true
        vim.notify(why, vim.log.levels.ERROR)
      end
      set_status('error', why)
      return nil
    end
    cmd = { path, 'lsp' }
  end
  return {
    name = 'lmrs',
    cmd = cmd,
    root_dir = vim.fn.getcwd(),
    init_options = init_options(),
    -- Send edits right away: completions are requested ~100 ms after a keystroke anyway.
    flags = { debounce_text_changes = 0 },
    handlers = { ['$/progress'] = on_progress, ['window/showMessage'] = on_show_message },
    on_init = function()
      if state.status == 'off' then set_status('loading') end
    end,
    on_exit = function(code)
      state.client_id = nil
      M.clear()
      vim.schedule(function()
        set_status(code == 0 and 'off' or 'error', code == 0 and '' or ('lmrs exited with code ' .. code))
      end)
    end,
  }
end

local function attach(buf)
  if not state.enabled or not filetype_enabled(buf) then return end
  if vim.lsp.start then
    -- Neovim >= 0.8: start or reuse the client (same name and root), attach the buffer.
    local config = client_config()
    if not config then return end
    state.client_id = vim.lsp.start(config, { bufnr = buf })
  else
    if not get_client() then
      local config = client_config()
      if not config then return end
      state.client_id = vim.lsp.start_client(config)
      if not state.client_id then
        set_status('error', 'could not start ' .. config.cmd[1])
        return
      end
    end
    vim.lsp.buf_attach_client(buf, state.client_id)
  end
  if state.client_id and use_builtin() then
    vim.lsp.inline_completion.enable(true, { bufnr = buf })
  end
end

--- Stop the server (and hide suggestions).
function M.stop()
  M.dismiss()
  local client = get_client()
  if client then
    if has('nvim-0.11') then client:stop() else client.stop() end
  end
  state.client_id = nil
  set_status('off')
end

--- Restart the server and reattach the loaded buffers.
function M.restart()
  M.stop()
  state.missing_notified = false
  vim.defer_fn(function()
    for _, buf in ipairs(api.nvim_list_bufs()) do
      if api.nvim_buf_is_loaded(buf) then attach(buf) end
    end
  end, 200)
end

--- Turn suggestions on or off (the server keeps running).
function M.toggle()
  state.enabled = not state.enabled
  if not state.enabled then M.dismiss() end
  local buf = api.nvim_get_current_buf()
  if state.enabled and not get_client() then attach(buf) end
  if use_builtin() and get_client() then
    vim.lsp.inline_completion.enable(state.enabled, { bufnr = buf })
  end
  vim.notify('lmrs: suggestions ' .. (state.enabled and 'on' or 'off'))
end

--- "loading" | "ready" | "busy" | "error" | "off", and the last message. For the status line:
--- `%{luaeval("require'lmrs'.statusline()")}`.
function M.status()
  return state.status, state.message
end

function M.statusline()
  if state.status == 'off' then return '' end
  return 'lmrs:' .. (state.enabled and state.status or 'disabled')
end

--- The client id (nil before the server starts).
function M.client_id()
  return state.client_id
end

local function map(lhs, fn, fallback)
  if not lhs or lhs == '' then return end
  vim.keymap.set('i', lhs, function()
    if not fn() and fallback then
      -- Nothing to accept: behave like the key was not mapped.
      api.nvim_feedkeys(api.nvim_replace_termcodes(lhs, true, false, true), 'n', false)
    end
  end, { silent = true, desc = 'lmrs' })
end

local function builtin_accept()
  -- 0.12's get() accepts the shown candidate and returns whether it did.
  local ok, accepted = pcall(vim.lsp.inline_completion.get)
  return ok and accepted == true
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(defaults), opts or {})
  state.missing_notified = false
  vim.cmd('highlight default link LmrsGhostText Comment')

  local group = api.nvim_create_augroup('lmrs', { clear = true })
  api.nvim_create_autocmd('FileType', { group = group, callback = function(a) attach(a.buf) end })
  -- Buffers already open when setup() runs (e.g. setup called late).
  for _, buf in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(buf) and vim.bo[buf].filetype ~= '' then attach(buf) end
  end

  local k = M.config.keymaps
  if use_builtin() then
    map(k.accept, builtin_accept, true)
  else
    api.nvim_create_autocmd('TextChangedI', { group = group, callback = on_text_changed })
    api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, { group = group, callback = M.dismiss })
    api.nvim_create_autocmd('CursorMovedI', {
      group = group,
      callback = function()
        -- Moving without typing invalidates the suggestion. CursorMovedI fires *before*
        -- TextChangedI, so a move caused by typing (the buffer changed since the ghost was drawn)
        -- is left to on_text_changed, which may keep the ghost (typing through).
        if not ghost then return end
        if api.nvim_buf_get_changedtick(ghost.buf) ~= ghost.tick then return end
        local c = api.nvim_win_get_cursor(0)
        if c[1] - 1 ~= ghost.row or c[2] ~= ghost.col then M.dismiss() end
      end,
    })
    map(k.accept, M.accept, true)
    map(k.accept_word, M.accept_word, true)
    map(k.accept_line, M.accept_line, true)
    map(k.dismiss, M.dismiss, true)
  end
  map(k.next, function() M.cycle(1) return true end)
  map(k.prev, function() M.cycle(-1) return true end)
  map(k.trigger, function() M.request(true) return true end)

  local cmd = api.nvim_create_user_command
  cmd('LmrsToggle', M.toggle, { desc = 'lmrs: turn suggestions on/off' })
  cmd('LmrsRestart', M.restart, { desc = 'lmrs: restart the language server' })
  cmd('LmrsStatus', function()
    print(('lmrs: %s %s'):format(state.enabled and state.status or 'disabled', state.message))
  end, { desc = 'lmrs: server status' })
  cmd('LmrsLog', function()
    -- The server logs to stderr, which Neovim writes into its LSP log.
    vim.cmd('tabnew ' .. vim.fn.fnameescape(vim.lsp.get_log_path()))
  end, { desc = 'lmrs: open the LSP log (server stderr)' })
  cmd('LmrsSuggest', function() M.request(true) end, { desc = 'lmrs: ask for a suggestion now' })
end

return M
