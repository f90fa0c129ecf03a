-- Drives a headless Neovim test as a user would: the test's body runs in a coroutine that yields
-- to the event loop (so typeahead, timers, LSP messages and curl jobs are processed) while it
-- sleeps, waits for a condition or types. Shared by e2e.lua (our plugin) and llama_vim.lua
-- (llama.vim); loaded with `dofile` beside them.
--
--   local driver = dofile(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':h') .. '/driver.lua')
--   driver.run(main, finish)   -- main() uses driver.sleep / wait_until / feed / type_text

local api = vim.api
local M = {}
local co

--- Lets the event loop run for `ms` milliseconds.
function M.sleep(ms)
  vim.defer_fn(function() assert(coroutine.resume(co)) end, ms)
  coroutine.yield()
end

--- Waits (50 ms steps) until `cond()` holds; an error naming `what` after `ms` milliseconds.
function M.wait_until(what, cond, ms)
  local waited = 0
  while not cond() do
    if waited >= ms then error('waited ' .. ms .. ' ms for ' .. what) end
    M.sleep(50)
    waited = waited + 50
  end
end

--- Feeds keys as if typed ('t'), with mappings applied ('m': insert-mode mappings such as a
--- plugin's <Tab>).
function M.feed(keys)
  api.nvim_feedkeys(api.nvim_replace_termcodes(keys, true, false, true), 'mt', false)
end

--- Types `s` one character at a time, `pause_ms` (default 15) apart.
function M.type_text(s, pause_ms)
  for ch in s:gmatch('.') do
    M.feed(ch)
    M.sleep(pause_ms or 15)
  end
end

--- Runs `main` in the coroutine; an error in it ends the test through `finish(false, traceback)`.
function M.run(main, finish)
  co = coroutine.create(function()
    local ok, err = xpcall(main, debug.traceback)
    if not ok then finish(false, err) end
  end)
  assert(coroutine.resume(co))
end

return M
