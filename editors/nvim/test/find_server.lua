-- Headless test of how the plugin finds the server binary and says when it is missing:
--   nvim --headless -u NONE -i NONE --cmd 'set rtp^=editors/nvim' -c 'luafile editors/nvim/test/find_server.lua'
-- An explicit server_path wins; else `lmrs` on PATH; else ~/.cargo/bin/lmrs; else an error
-- notification with the install command (and no client started).
local uv = vim.loop

local function fail(msg)
  io.stderr:write('[nvim-find] FAIL: ' .. msg .. '\n')
  vim.cmd('cquit 1')
end

local ok, err = pcall(function()
  local root = vim.fn.tempname()
  local home, bin, other = root .. '/home', root .. '/bin', root .. '/other'
  for _, d in ipairs({ home .. '/.cargo/bin', bin, other }) do vim.fn.mkdir(d, 'p') end
  local function exe(path)
    vim.fn.writefile({ '#!/bin/sh', 'exit 0' }, path)
    vim.fn.setfperm(path, 'rwxr-xr-x')
  end
  exe(home .. '/.cargo/bin/lmrs')
  exe(other .. '/my-lmrs')
  vim.env.HOME = home
  vim.env.PATH = '/usr/bin:/bin' -- no lmrs here
  assert(vim.fn.executable('lmrs') == 0, 'an lmrs on the system PATH spoils this test')
  local lmrs = require('lmrs')
  lmrs.config.server_path = nil
  local function eq(got, want, what)
    if got ~= want then error(('%s: got %s, want %s'):format(what, tostring(got), tostring(want))) end
  end
  local home_real = uv.os_homedir()
  -- os_homedir follows $HOME on Unix.
  eq(home_real, home, 'os_homedir follows HOME')
  eq(lmrs.find_server(), home .. '/.cargo/bin/lmrs', '~/.cargo/bin when not on PATH')
  exe(bin .. '/lmrs')
  vim.env.PATH = bin .. ':/usr/bin:/bin'
  eq(lmrs.find_server(), bin .. '/lmrs', 'PATH first')
  lmrs.config.server_path = other .. '/my-lmrs'
  eq(lmrs.find_server(), other .. '/my-lmrs', 'an explicit server_path wins')
  lmrs.config.server_path = other .. '/nope'
  local path, why = lmrs.find_server()
  eq(path, nil, 'a wrong server_path is not replaced by another binary')
  assert(why:find('server_path', 1, true), why)

  -- Nothing anywhere: setup() + a Python buffer notify once with the install command.
  os.remove(bin .. '/lmrs')
  os.remove(home .. '/.cargo/bin/lmrs')
  local notes = {}
  vim.notify = function(msg, level) table.insert(notes, { msg = msg, level = level }) end
  lmrs.setup({})
  vim.cmd('edit ' .. vim.fn.fnameescape(root .. '/a.py'))
  vim.bo.filetype = 'python'
  vim.cmd('edit ' .. vim.fn.fnameescape(root .. '/b.py'))
  vim.bo.filetype = 'python'
  eq(#notes, 1, 'one notification')
  eq(notes[1].level, vim.log.levels.ERROR, 'an error')
  assert(notes[1].msg:find('cargo install --locked', 1, true), notes[1].msg)
  eq(lmrs.client_id(), nil, 'no client')
  eq((lmrs.status()), 'error', 'status')
  io.stdout:write('[nvim-find] ok: server_path, PATH, ~/.cargo/bin, missing binary notified once\n')
end)
if not ok then fail(tostring(err)) end
vim.cmd('qall!')
